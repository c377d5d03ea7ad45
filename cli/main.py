"""vanta-cli: the command-line entry point. Commands live in their own modules."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Vanta Vault: secrets from SOPS files in Git, handed out against scoped tokens."""


def main() -> None:
    cli()
