"""Placeholder: replaced by the ciphertext-history implementation (issue 4)."""
