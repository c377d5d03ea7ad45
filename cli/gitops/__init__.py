"""Secrets edited the GitOps way: a checkout of SOPS files, one commit per change, history and
rollback, and the checks a pull request runs.
"""
