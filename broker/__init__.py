"""Vanta Vault broker: hands SOPS-encrypted secrets from Git to services holding scoped JWTs."""
