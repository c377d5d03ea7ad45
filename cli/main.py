"""vanta-cli: the command-line entry point. Commands live in their own modules."""

from __future__ import annotations

import importlib

import click

# (module, attribute): each module defines one Click command or group. Imported eagerly:
# a command that cannot load is an error, never a command that silently vanished.
_COMMANDS = [
    ("cli.token_cmd", "token"),
    ("cli.run_cmd", "run_with_secrets"),
    ("cli.secrets_cmd", "secrets"),
    ("cli.audit_cmd", "audit"),
    ("cli.rotation_cmd", "rotation"),
    ("cli.import_cmd", "import_"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Vanta Vault: secrets from SOPS files in Git, handed out against scoped tokens."""


for _module, _attr in _COMMANDS:
    cli.add_command(getattr(importlib.import_module(_module), _attr))


def main() -> None:
    cli()
