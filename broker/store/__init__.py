"""Secrets at a Git ref: refs read from the repository's files, blobs decrypted by sops and
cached by blob id, a key's history by ciphertext, rotation ages, and following a remote.
"""
