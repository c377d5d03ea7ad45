"""The audit trail: hash-chained JSONL records appended before an answer leaves, rotated files,
verification and export.
"""
