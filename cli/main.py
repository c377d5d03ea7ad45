"""vanta-cli: the command-line entry point. Commands live in their own modules."""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

import click

from cli.help_format import HELP_OPTIONS, VantaContext, apply_help_style

# (module, attribute): each module defines one Click command or group. Imported eagerly:
# a command that cannot load is an error, never a command that silently vanished.
_COMMANDS = [
    ("cli.commands.token", "token"),
    ("cli.commands.get", "get"),
    ("cli.commands.run", "run_with_secrets"),
    ("cli.commands.secrets", "secrets"),
    ("cli.commands.audit", "audit"),
    ("cli.commands.rotation", "rotation"),
    ("cli.commands.import_", "import_"),
]
# Short names, as other tools have them (`doppler run`, `op run`).
ALIASES = {"run": "run-with-secrets"}


def _version() -> str:
    try:
        return version("vanta-vault")
    except PackageNotFoundError:
        return "unknown"


class AliasedGroup(click.Group):
    """A group whose commands may also be called by an alias (listed beside the name)."""

    context_class = VantaContext

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, ALIASES.get(cmd_name, cmd_name))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        aliases = {name: alias for alias, name in ALIASES.items()}
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            shown = f"{name}, {aliases[name]}" if name in aliases else name
            rows.append((shown, command.get_short_help_str(limit=formatter.width - 6 - 24)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=AliasedGroup, context_settings={"help_option_names": HELP_OPTIONS})
@click.version_option(
    _version(), "--version", prog_name="vanta-cli", message="%(prog)s %(version)s"
)
def cli() -> None:
    """Vanta Vault: secrets from SOPS files in Git, handed out against scoped tokens.

    \b
    Start with:
      vanta-cli get dev DATABASE_URL              one value, for $(...)
      vanta-cli run -- npm start                  a program with its secrets
      vanta-cli token lookup                      what VANTA_TOKEN may do, until when
      vanta-cli secrets set dev LOG_LEVEL         change a value in a Git commit

    \b
    --version here is this program's version; after `get` it names a commit:
      vanta-cli get --version COMMIT dev DATABASE_URL

    A .vanta.yaml in the current directory or above may name defaults for run and get
    (defaults: environment, key_pattern): see `vanta-cli run -h`.
    """


for _module, _attr in _COMMANDS:
    cli.add_command(getattr(importlib.import_module(_module), _attr))
apply_help_style(cli)


def main() -> None:
    cli()
