"""vanta-cli secrets: set, unset, list, history, rollback and check on a Git checkout.

Thin Click commands over cli.gitops.checkout (changes and reading) and cli.gitops.check (check).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from broker.store.history import HistoryError
from cli.errors import CliError, one_line_errors
from cli.gitops.check import check_paths
from cli.gitops.checkout import (
    VALUE_TYPES,
    Checkout,
    GitOpsError,
    Outcome,
    has_uncommitted_changes,
    key_listing,
    key_versions,
    new_environment_note,
    open_checkout,
    rollback_file,
    rollback_key,
    set_value,
    typed_value,
    unset_value,
)
from cli.gitops.sops import SopsError

F = TypeVar("F", bound=Callable[..., Any])


_one_line_errors = one_line_errors(GitOpsError, SopsError, HistoryError)


_repo = click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="The Git checkout of the secrets (any directory inside it).",
)
_no_commit = click.option(
    "--no-commit",
    is_flag=True,
    help="Leave the change staged instead of committing it (to commit it yourself).",
)
_as_json = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@click.group()
def secrets() -> None:
    """Edit, inspect and roll back secrets in Git, the GitOps way.

    Each change edits secrets/<ENV>.enc.yaml with sops (other keys keep their ciphertext,
    so the diff is one line) and makes exactly one commit naming the environment and key,
    never the value. Uses the checkout's .sops.yaml and your own SOPS key; list, history
    and check need no key at all.
    """


def _report(outcome: Outcome) -> None:
    if not outcome.changed:
        click.echo(f"unchanged: {outcome.message} (nothing to commit)")
    elif outcome.commit is None:
        click.echo(f"staged {outcome.rel_path}, not committed: {outcome.message}")
    else:
        click.echo(f"committed {outcome.commit[:12]}: {outcome.message}")


def _read_value(environment: str, key: str, value: str | None, from_file: Path | None) -> str:
    if value is not None and from_file is not None:
        raise click.UsageError("give --value or --from-file, not both")
    if value is not None:
        return value
    if from_file is not None:
        try:
            return from_file.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise CliError(f"{from_file} is not UTF-8 text") from None
        except OSError as exc:
            raise CliError(f"{from_file} cannot be read ({exc.strerror})") from None
    if sys.stdin.isatty():
        return click.prompt(
            f"Value of {environment}/{key}", hide_input=True, confirmation_prompt=True
        )
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError("the value on standard input is not UTF-8 text") from None
    text = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
    if not text:
        raise CliError("no value on standard input (give --value, --from-file or pipe one in)")
    return text


@secrets.command("set")
@click.argument("environment")
@click.argument("key")
@click.option("--value", metavar="V", help="The value (it lands in your shell history).")
@click.option(
    "--from-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the value from this file, verbatim (certificates, JSON blobs).",
)
@click.option(
    "--type",
    "value_type",
    type=click.Choice(VALUE_TYPES),
    default="string",
    show_default=True,
    help="Store the value as a string, a number or a boolean.",
)
@click.option(
    "--create",
    is_flag=True,
    help="ENVIRONMENT is meant to be new: start it without the note that names the "
    "environments there are.",
)
@_repo
@_no_commit
@_one_line_errors
def set_command(
    environment: str,
    key: str,
    value: str | None,
    from_file: Path | None,
    value_type: str,
    create: bool,
    repo: Path,
    no_commit: bool,
) -> None:
    """Set KEY in ENVIRONMENT and commit the change.

    Without --value or --from-file the value is read from standard input, so it stays
    out of shell history: piped input loses one trailing newline; at a terminal you are
    asked for it (hidden) twice. Values are strings unless --type says number or bool
    (PORT as 8080, DEBUG as true). An environment that has no file yet is started: its
    file is created under the .sops.yaml creation rule for secrets/ENVIRONMENT.enc.yaml,
    and a note on stderr names the environments there are (a typo shows there); --create
    says the new environment is meant and leaves the note out.

    \b
    Examples:
      printf '%s' "$NEW_DB_URL" | vanta-cli secrets set prod DATABASE_URL
      vanta-cli secrets set prod TLS_CERT --from-file server.pem
      vanta-cli secrets set dev PORT --value 8080 --type number --no-commit
      vanta-cli secrets set qa LOG_LEVEL --value debug --create
    """
    checkout = open_checkout(repo)
    note = new_environment_note(checkout, environment)  # said before asking for the value
    if note is not None and not create:
        click.echo(f"vanta-cli: {note}", err=True)
    text = _read_value(environment, key, value, from_file)
    stored = typed_value(text, value_type)
    outcome = set_value(checkout, environment, key, stored, commit=not no_commit)
    _report(outcome)


@secrets.command("unset")
@click.argument("environment")
@click.argument("key")
@_repo
@_no_commit
@_one_line_errors
def unset_command(environment: str, key: str, repo: Path, no_commit: bool) -> None:
    """Remove KEY from ENVIRONMENT and commit the change.

    \b
    Example:
      vanta-cli secrets unset staging LEGACY_API_KEY
    """
    _report(unset_value(open_checkout(repo), environment, key, commit=not no_commit))


@secrets.command("list")
@click.argument("environment")
@_repo
@_as_json
@_one_line_errors
def list_command(environment: str, repo: Path, as_json: bool) -> None:
    """List ENVIRONMENT's keys at HEAD with the commit and date each last changed.

    Never shows values, and needs no key: changes are found by comparing ciphertext.

    \b
    Example:
      vanta-cli secrets list prod
    """
    checkout = open_checkout(repo)
    rows = key_listing(checkout, environment)
    _note_uncommitted(checkout, environment)
    if as_json:
        listing = [
            {
                "key": key,
                "last_changed": change.commit if change else None,
                "changed_at": change.committed_at if change else None,
                "author": change.author if change else None,
            }
            for key, change in rows
        ]
        click.echo(json.dumps(listing, indent=2))
        return
    table = [
        (key, change.committed_at, change.commit[:12], change.author)
        if change
        else (key, "-", "-", "-")
        for key, change in rows
    ]
    _print_table(("KEY", "CHANGED AT", "COMMIT", "AUTHOR"), table)


@secrets.command("history")
@click.argument("environment")
@click.argument("key")
@_repo
@_as_json
@_one_line_errors
def history_command(environment: str, key: str, repo: Path, as_json: bool) -> None:
    """Show the commits that added, changed or removed KEY, newest first.

    The same versions as GET /api/v1/history/ENV/KEY, from HEAD; no key is needed. Any
    listed commit can be given to `rollback --to`.

    \b
    Example:
      vanta-cli secrets history prod DATABASE_URL
    """
    checkout = open_checkout(repo)
    versions, skipped = key_versions(checkout, environment, key)
    for version in skipped:
        click.echo(
            f"note: skipped {version.commit[:12]} ({version.committed_at}): "
            f"{checkout.rel_path(environment)} there is not served: {version.reason}",
            err=True,
        )
    if as_json:
        body: dict[str, Any] = {
            "environment": environment,
            "key": key,
            "versions": [v.to_json() for v in versions],
        }
        if skipped:
            body["skipped"] = [v.to_json() for v in skipped]
        click.echo(json.dumps(body, indent=2))
        return
    table = [(v.commit[:12], v.committed_at, v.change, v.author, v.message) for v in versions]
    _print_table(("COMMIT", "COMMITTED AT", "CHANGE", "AUTHOR", "MESSAGE"), table)


@secrets.command("rollback")
@click.argument("environment")
@click.argument("key", required=False)
@click.option("--to", "revision", required=True, metavar="REV", help="A commit, tag or branch.")
@_repo
@_no_commit
@_one_line_errors
def rollback_command(
    environment: str, key: str | None, revision: str, repo: Path, no_commit: bool
) -> None:
    """Give KEY (or, without KEY, every key of ENVIRONMENT) its value at REV, in a new commit.

    The old value is decrypted and encrypted again to today's recipients; a key that did
    not exist at REV is removed. History is never rewritten, and keys whose value is
    already right keep their ciphertext.

    \b
    Examples:
      vanta-cli secrets rollback prod DATABASE_URL --to 3f2a9c1
      vanta-cli secrets rollback staging --to v1.4.0
    """
    checkout = open_checkout(repo)
    commit = not no_commit
    if key is None:
        outcome = rollback_file(checkout, environment, revision, commit=commit)
    else:
        outcome = rollback_key(checkout, environment, key, revision, commit=commit)
    _report(outcome)


@secrets.command("check")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@_repo
@click.option(
    "--allow-variable",
    "allowed",
    metavar="NAME",
    multiple=True,
    help="A variable keys may set although run-with-secrets refuses it by default "
    "(repeatable; the run needs the same --allow-variable).",
)
@_one_line_errors
def check_command(paths: tuple[Path, ...], repo: Path, allowed: tuple[str, ...]) -> None:
    """Check that secrets files are encrypted, sealed and keyed as .sops.yaml says.

    Exits 1, naming file and key, for a plaintext value, a file without sops metadata or
    MAC, recipients that differ from the file's .sops.yaml rule (fix those with
    `sops updatekeys FILE`), or a key whose variable name run-with-secrets refuses (PATH,
    IFS, BASH_ENV, ENV, LD_*, DYLD_*, VANTA_*, PYTHONPATH, NODE_OPTIONS, ...: a key that
    changes how programs start) unless --allow-variable names it. Without PATHs, checks
    every YAML and JSON file under secrets/. Needs no key: made for pre-commit hooks and
    pull-request CI.

    \b
    Examples:
      vanta-cli secrets check
      vanta-cli secrets check secrets/prod.enc.yaml
      vanta-cli secrets check --allow-variable PATH
    """
    checkout: Checkout = open_checkout(repo)
    files, problems = check_paths(checkout.top, list(paths), allowed)
    for problem in problems:
        click.echo(str(problem))
    if problems:
        bad = len({p.path for p in problems})
        raise CliError(f"{len(problems)} problem(s) in {bad} of {len(files)} file(s)")
    click.echo(f"ok: {len(files)} file(s) checked")


def _note_uncommitted(checkout: Checkout, environment: str) -> None:
    if has_uncommitted_changes(checkout, environment):
        click.echo(
            f"note: {checkout.rel_path(environment)} has uncommitted changes (not shown)",
            err=True,
        )


def _print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
