"""`vanta-cli audit ...`: checking the audit trail (SPEC §10, §17)."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import click

from broker.audit import GENESIS
from broker.audit_verify import ChainBroken, is_hash, verify_chain
from cli.errors import CliError


class ChainBrokenError(CliError):
    """Exit 1 printing the contract's `FILE: line N: <reason>` line as it is."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.format_message(), err=True, file=file)


def _hash_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    if not is_hash(value.lower()):
        raise click.BadParameter("must be a record hash: 64 hex digits")
    return value.lower()


@click.group()
def audit() -> None:
    """Check the broker's hash-chained audit trail."""


@audit.command()
@click.argument(
    "files",
    metavar="FILE...",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
)
@click.option(
    "--after",
    metavar="HASH",
    callback=_hash_option,
    help="The chain starts after this record hash (older files were shipped away).",
)
def verify(files: tuple[Path, ...], after: str | None) -> None:
    """Check FILE... as one chain, oldest first (rotated files, then the live one).

    Exits 0 on an intact chain; otherwise prints `FILE: line N: <reason>` for the first
    line that was changed, removed or inserted, and exits 1.
    """
    try:
        summary = verify_chain(files, after or GENESIS)
    except ChainBroken as exc:
        raise ChainBrokenError(str(exc.problem)) from None
    except OSError as exc:
        raise CliError(f"cannot read {exc.filename}: {exc.strerror}") from None
    click.echo(
        f"ok: {summary.records} records in {summary.files} file(s); last hash {summary.last_hash}"
    )
