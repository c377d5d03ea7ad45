"""vanta-cli's commands: each module parses options and calls library code."""
