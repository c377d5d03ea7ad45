"""Importing secrets from elsewhere (AWS Secrets Manager, dotenv exports) into a checkout,
through the same code path as `secrets set`.
"""
