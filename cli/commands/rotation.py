"""vanta-cli rotation check: which secrets are due for rotation, from Git history alone."""

from __future__ import annotations

import json
from pathlib import Path

import click
import requests

from broker.store.rotation import (
    KeyStatus,
    PolicyError,
    RepositoryError,
    at_least,
    count_by_status,
    most_urgent_first,
    repository_check,
)
from cli.errors import CliError
from cli.names import check_option, environment_problem

WEBHOOK_TIMEOUT_SECONDS = 10
_COLOURS = {"overdue": "red", "due": "yellow", "ok": "green"}


@click.group()
def rotation() -> None:
    """Rotation reminders: how long since each secret last changed."""


@rotation.command("check")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="A Git checkout of the secrets.",
)
@click.option("--environment", "-e", metavar="ENV", help="Check one environment only.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option(
    "--notify",
    metavar="URL",
    envvar="VANTA_ROTATION_WEBHOOK",
    help="POST the names of due and overdue keys to this Slack-compatible webhook "
    "(also VANTA_ROTATION_WEBHOOK).",
)
@click.option(
    "--fail-on",
    type=click.Choice(["due", "overdue"]),
    help="Exit 1 when a key has this status or worse (the report is printed all the same).",
)
def check(
    repo: Path, environment: str | None, as_json: bool, notify: str | None, fail_on: str | None
) -> None:
    """Report every key's age against the policy in .vanta.yaml, most urgent first.

    Works from Git history at HEAD by comparing ciphertext: no decryption key is needed.
    Files the broker does not serve (YAML anchors or aliases, too large, or a name that is
    no environment's) are skipped, each with a note on standard error.

    \b
      vanta-cli rotation check
      vanta-cli rotation check --environment prod --fail-on overdue
      vanta-cli rotation check --json --notify "$SLACK_WEBHOOK_URL"
    """
    if environment is not None:
        check_option(environment_problem(environment), "--environment")
    try:
        report = repository_check(repo, environment)
    except (RepositoryError, PolicyError) as exc:
        raise CliError(str(exc)) from None
    for skipped in report.skipped:
        click.echo(f"note: skipped {skipped.path}: {skipped.reason}", err=True)
    statuses = most_urgent_first(report.statuses)
    if as_json:
        click.echo(json.dumps([s.to_json() for s in statuses], indent=2))
    else:
        _print_table(statuses)
    if notify:
        _notify(notify, statuses, repo)
    if fail_on and any(at_least(s.status, fail_on) for s in statuses):
        raise click.exceptions.Exit(1)


def _print_table(statuses: list[KeyStatus]) -> None:
    if not statuses:
        click.echo("no keys found")
        return
    header = ("STATUS", "ENVIRONMENT", "KEY", "AGE", "MAX", "LAST CHANGED", "COMMIT")
    rows = [
        (
            s.status,
            s.environment,
            s.key,
            f"{s.age_days}d",
            f"{s.max_age_days}d",
            s.changed_at,
            s.last_changed[:12],
        )
        for s in statuses
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {3, 4}  # the day counts line up on the right

    def line(cells: tuple[str, ...]) -> str:
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    click.echo(line(header))
    for row in rows:
        text = line(row)
        click.echo(click.style(text[: widths[0]], fg=_COLOURS[row[0]]) + text[widths[0] :])
    counts = count_by_status(statuses)
    click.echo(
        f"\n{len(statuses)} keys: {counts['overdue']} overdue, {counts['due']} due, "
        f"{counts['ok']} ok"
    )


def notification(statuses: list[KeyStatus], repository: str) -> dict[str, object] | None:
    """The webhook body (names only), or None when nothing is due or overdue."""
    due = [f"{s.environment}/{s.key}" for s in statuses if s.status == "due"]
    overdue = [f"{s.environment}/{s.key}" for s in statuses if s.status == "overdue"]
    if not due and not overdue:
        return None
    lines = [f"Vanta Vault rotation check ({repository}): {len(overdue)} overdue, {len(due)} due"]
    if overdue:
        lines.append("Overdue: " + ", ".join(overdue))
    if due:
        lines.append("Due: " + ", ".join(due))
    return {"text": "\n".join(lines), "due": due, "overdue": overdue}


def _notify(url: str, statuses: list[KeyStatus], repo: Path) -> None:
    body = notification(statuses, repo.resolve().name)
    if body is None:
        click.echo("nothing due or overdue: no notification sent", err=True)
        return
    try:
        answer = requests.post(url, json=body, timeout=WEBHOOK_TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        # The URL itself may be a credential (Slack's are): never print it.
        raise CliError(
            f"the --notify webhook could not be reached ({type(exc).__name__})"
        ) from None
    if not 200 <= answer.status_code < 300:
        raise CliError(f"the --notify webhook answered HTTP {answer.status_code}")
    click.echo(
        f"notified: {len(body['overdue'])} overdue, {len(body['due'])} due",  # type: ignore[arg-type]
        err=True,
    )
