"""`vanta-cli audit ...`: checking the audit trail."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import click

from broker.audit.log import GENESIS
from broker.audit.verify import ChainBroken, is_hash, verify_chain
from cli.errors import CliError
from cli.extras import missing_extra


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


@audit.command()
@click.option("--to", "to", required=True, metavar="s3://BUCKET/PREFIX", help="Where to upload.")
@click.option(
    "--audit-log",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="VANTA_AUDIT_LOG",
    default="audit/access.jsonl",
    show_default=True,
    help="The live audit file (VANTA_AUDIT_LOG); its rotated files are shipped.",
)
@click.option(
    "--after",
    metavar="HASH",
    callback=_hash_option,
    help="Verify from this hash instead of the last-hash of the object shipped just before "
    "the oldest file on disk.",
)
@click.option("--delete-after", is_flag=True, help="Remove each file once it is in the bucket.")
def ship(to: str, audit_log: Path, after: str | None, delete_after: bool) -> None:
    """Upload rotated audit files to S3 after verifying them.

    Each becomes PREFIX/<file name> with metadata last-hash; the live file is never
    shipped. Run it as often as you like (an hourly job, with or without --delete-after):
    the files on disk are checked as one chain continuing the object shipped before them,
    those the bucket already holds with the same last-hash are not uploaded again, and a
    tampered or missing file, or a bucket copy whose last-hash differs from the file on
    disk, stops the run before anything is uploaded. Uses the standard AWS settings
    (credentials chain, region, AWS_ENDPOINT_URL). Example:

    \b
      vanta-cli audit ship --to s3://acme-audit/vanta/prod/ --delete-after
    """
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ModuleNotFoundError as exc:
        raise CliError(f"vanta-cli audit ship {missing_extra(exc, 'aws')}") from None

    from cli.audit_ship import Destination, ShipError
    from cli.audit_ship import ship as ship_files

    try:
        dest = Destination.parse(to)
        shipped = ship_files(
            boto3.client("s3"), audit_log, dest, after=after, delete_after=delete_after
        )
    except ShipError as exc:
        raise CliError(str(exc)) from None
    except (BotoCoreError, ClientError) as exc:
        raise CliError(f"S3: {type(exc).__name__}: {exc}") from None
    for item in shipped:
        verb = "uploaded" if item.uploaded else "already shipped"
        gone = ", removed" if item.deleted else ""
        click.echo(f"{verb}: {dest.key(item.name)} (last-hash {item.last_hash[:16]}…{gone})")
    if not shipped:
        click.echo("nothing to ship: no rotated audit files", err=True)
