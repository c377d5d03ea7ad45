"""vanta-cli import aws | dotenv: bring secrets in from elsewhere, in one commit.

Thin Click commands over cli.importers.plan (planning, writing) and its sources.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from broker.store.history import HistoryError
from cli.errors import CliError, one_line_errors
from cli.gitops.checkout import GitOpsError, open_checkout
from cli.gitops.sops import SopsError
from cli.importers.plan import (
    Collected,
    ImportFailed,
    Plan,
    apply_plan,
    commit_message,
    plan_import,
    require_clean,
)

F = TypeVar("F", bound=Callable[..., Any])


_one_line_errors = one_line_errors(ImportFailed, GitOpsError, SopsError, HistoryError)


def _common(command: F) -> F:
    options = [
        click.option(
            "--environment", required=True, help="The environment to import into (its file)."
        ),
        click.option(
            "--prefix",
            default="",
            help="Only names starting with this (case-sensitive); they lose it.",
        ),
        click.option(
            "--repo",
            type=click.Path(file_okay=False, path_type=Path),
            default=".",
            show_default=True,
            help="The Git checkout of the secrets (any directory inside it).",
        ),
        click.option(
            "--dry-run",
            is_flag=True,
            help="List the keys (never values) and conflicts; write nothing.",
        ),
        click.option(
            "--no-commit", is_flag=True, help="Leave the change staged instead of committing it."
        ),
        click.option("--overwrite", is_flag=True, help="Replace keys that already exist."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group("import")
def import_() -> None:
    """Import secrets from AWS Secrets Manager or a dotenv file, in one commit.

    Names become keys ('/' separates groups; other characters outside [A-Za-z0-9_.-]
    become '_'). Existing keys are kept unless --overwrite; any conflict (an existing key,
    two names giving one key, a key that would also be a group) is listed and nothing is
    written. Keys not imported keep their ciphertext byte for byte. The commit message
    counts and names the keys, never the values.
    """


@import_.command(
    "aws",
    epilog="""\b
Examples:
  vanta-cli import aws --environment prod --prefix prod/ --dry-run
  AWS_PROFILE=legacy vanta-cli import aws --environment prod --prefix prod/
""",
)
@_common
@_one_line_errors
def aws(
    environment: str,
    prefix: str,
    repo: Path,
    dry_run: bool,
    no_commit: bool,
    overwrite: bool,
) -> None:
    """Import every AWS Secrets Manager secret whose name starts with --prefix.

    Uses boto3's standard credentials, region and AWS_ENDPOINT_URL. A secret holding a
    JSON object becomes one key per field (prod/db {"user", "password"} -> db/user,
    db/password; numbers and booleans keep their type, nulls and arrays are skipped);
    any other text becomes one key. Binary secrets are skipped with a warning.
    """
    from cli.importers.aws import ORIGIN, collect_aws

    _import(collect_aws(prefix), ORIGIN, environment, repo, dry_run, no_commit, overwrite)


@import_.command(
    "dotenv",
    epilog="""\b
Examples:
  doppler secrets download --no-file --format env > prod.env
  vanta-cli import dotenv prod.env --environment prod --dry-run
  vanta-cli import dotenv - --environment dev < .env
""",
)
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@_common
@_one_line_errors
def dotenv(
    file: Path,
    environment: str,
    prefix: str,
    repo: Path,
    dry_run: bool,
    no_commit: bool,
    overwrite: bool,
) -> None:
    """Import the variables of a dotenv FILE ('-' for standard input).

    Reads Doppler, Infisical and .env exports: `export ` prefixes, comments and blank
    lines are ignored; double quotes take \\n, \\" and \\\\ escapes; single quotes are
    literal; nothing like $VAR is expanded. Values are imported as strings.
    """
    from cli.importers.dotenv import collect_dotenv

    found = collect_dotenv(_read_text(file), prefix)
    _import(found, "a dotenv file", environment, repo, dry_run, no_commit, overwrite)


def _read_text(file: Path) -> str:
    try:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        raise CliError(f"{file} cannot be read ({exc.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{file} is not UTF-8 text") from None


def _import(
    found: Collected,
    origin: str,
    environment: str,
    repo: Path,
    dry_run: bool,
    no_commit: bool,
    overwrite: bool,
) -> None:
    for warning in found.warnings:
        click.echo(f"warning: {warning}", err=True)
    checkout = open_checkout(repo)
    plan = plan_import(checkout, environment, found.candidates, overwrite)
    if dry_run:
        _show(plan)
    for problem in found.problems:
        click.echo(f"problem: {problem}", err=True)
    for conflict in plan.conflicts:
        click.echo(f"conflict: {conflict}", err=True)
    if found.problems or plan.conflicts:
        counts = [(len(plan.conflicts), "conflict"), (len(found.problems), "problem")]
        listed = ", ".join(f"{n} {word}{'s' if n > 1 else ''}" for n, word in counts if n)
        raise CliError(f"nothing written: {listed}")
    if not plan.writes:
        raise CliError(f"nothing to import from {origin}")
    if not no_commit:
        require_clean(checkout, environment)
    if dry_run:
        click.echo("dry run: nothing written")
        return
    keys = [item.key for item in plan.writes]
    message = commit_message(environment, origin, keys)
    outcome = apply_plan(checkout, plan, message, commit=not no_commit)
    if not outcome.changed:
        click.echo(f"unchanged: {plan.rel_path} already holds these values (nothing to commit)")
    elif outcome.commit is None:
        click.echo(f"staged {plan.rel_path}, not committed: {outcome.message}")
    else:
        click.echo(f"committed {outcome.commit[:12]}: {outcome.message}")


def _show(plan: Plan) -> None:
    """The keys an import would write, never their values."""
    count = len(plan.writes)
    click.echo(f"would import {count} key(s) into {plan.rel_path}:")
    replaced = {item.key for item in plan.replaced}
    for item in plan.writes:
        mark, note = ("~", "replaces the existing value") if item.key in replaced else ("+", "new")
        click.echo(f"  {mark} {item.key}  ({note}; from {item.source})")
