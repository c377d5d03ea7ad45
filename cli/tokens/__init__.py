"""Tokens as the CLI holds them: where one comes from, what it says about itself (read without
its key), minting offline with the signing key, and refusals turned into advice.
"""
