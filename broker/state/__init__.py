"""Token state the workers (or brokers) share: usage counts, revocations, minted scopes, rate-
limit counters; SQLite and a shared memory table on one host, Redis across hosts.
"""
