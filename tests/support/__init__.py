"""Helpers the tests share, one module per kind of real thing they build."""
