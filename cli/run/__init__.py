"""run-with-secrets' machinery: references and templates, fetching, injection as variables, a
file or a pipe, output masking, and the child process.
"""
