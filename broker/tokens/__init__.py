"""Tokens: claims, minting and verification (HS256, scoped), and the per-worker memo of tokens
already verified.
"""
