"""vanta-cli: the command-line entry point. Commands live in their own modules."""

from __future__ import annotations

import importlib

import click

# (module, attribute): each module defines one Click command or group.
_COMMANDS = [
    ("cli.token_cmd", "token"),
    ("cli.run_cmd", "run_with_secrets"),
    ("cli.secrets_cmd", "secrets"),
    ("cli.audit_cmd", "audit"),
    ("cli.rotation_cmd", "rotation"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Vanta Vault: secrets from SOPS files in Git, handed out against scoped tokens."""


for _module, _attr in _COMMANDS:
    try:
        cli.add_command(getattr(importlib.import_module(_module), _attr))
    except (ImportError, AttributeError):  # a command still being built
        pass


def main() -> None:
    cli()
