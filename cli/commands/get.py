"""vanta-cli get: one secret's value, for `$(...)`, like `vault kv get -field`, `op read`
and `doppler secrets get --plain`."""

from __future__ import annotations

import json
import re
from datetime import UTC

import click

from cli.client import DEFAULT_BROKER_URL, Secret, VaultClient, VaultError
from cli.client._results import yaml_scalar
from cli.errors import CliError
from cli.names import check_option, environment_problem, key_problem
from cli.project_defaults import FILE_NAME, DefaultsError, load_defaults
from cli.tokens.hints import explain
from cli.tokens.input import chosen_token, token_options

COMMIT_RE = re.compile(r"[0-9a-fA-F]{7,40}")


@click.command(
    "get",
    epilog="""\b
Examples:
  vanta-cli get dev DATABASE_URL
  export DATABASE_URL="$(vanta-cli get prod DATABASE_URL)"
  vanta-cli get prod API_KEYS/stripe --version "$(git rev-parse HEAD~3)"
  vanta-cli get prod PORT --json | jq .version
  vanta-cli get LOG_LEVEL          # the environment from .vanta.yaml (defaults:)
""",
)
@click.argument("names", nargs=-1, required=True, metavar="[ENVIRONMENT] KEY")
@click.option(
    "--version",
    "commit",
    metavar="COMMIT",
    help="Read the value as of this commit (a SHA of 7 to 40 hex digits reachable from the "
    "served branch), not the served one.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the whole answer as JSON: environment, key, value, version, committed_at.",
)
@click.option(
    "-n",
    "--no-newline",
    is_flag=True,
    help="Print the value without a newline after it (for a file that must hold it exactly).",
)
@token_options("the reader token (secrets:read)")
@click.option(
    "--broker-url",
    envvar="VANTA_BROKER_URL",
    default=DEFAULT_BROKER_URL,
    show_default=True,
    help="The broker [env: VANTA_BROKER_URL].",
)
def get(
    names: tuple[str, ...],
    commit: str | None,
    as_json: bool,
    no_newline: bool,
    token: str | None,
    token_file: str | None,
    broker_url: str,
) -> None:
    """Print the value of KEY in ENVIRONMENT, and nothing else, on stdout.

    Reads with VANTA_TOKEN (or --token-file) directly: the token needs secrets:read for
    that environment and key, and a read uses one of a usage-limited token's uses.
    Numbers and booleans print as YAML writes them (8080, true). Without ENVIRONMENT,
    the default environment of the nearest .vanta.yaml is used (defaults: environment:).
    --version (after `get`) is the secret's version, a commit; `vanta-cli --version` is
    this program's.
    """
    environment, key = _environment_and_key(names)
    check_option(environment_problem(environment), "ENVIRONMENT")
    check_option(key_problem(key), "KEY")
    if commit is not None and not COMMIT_RE.fullmatch(commit):
        raise click.BadParameter(
            f"{commit!r} is not a commit SHA (7 to 40 hex digits); for a branch or tag, "
            f'give its commit: --version "$(git rev-parse {commit})"',
            param_hint="'--version'",
        )
    source = chosen_token(token, token_file)
    if source.token is None:
        raise CliError("no token: set VANTA_TOKEN, or give --token-file FILE")
    client = VaultClient(broker_url, source.token, cache_ttl=0)
    try:
        secret = client.get(environment, key, version=commit)
    except VaultError as exc:
        raise CliError(explain(exc, source)) from None
    if as_json:
        click.echo(json.dumps(_answer(secret), ensure_ascii=False))
        return
    click.echo(yaml_scalar(secret.value), nl=not no_newline)


def _environment_and_key(names: tuple[str, ...]) -> tuple[str, str]:
    if len(names) == 2:
        return names[0], names[1]
    if len(names) != 1:
        raise click.UsageError("give ENVIRONMENT KEY (or just KEY, with a default environment)")
    try:
        defaults = load_defaults()
    except DefaultsError as exc:
        raise CliError(str(exc)) from None
    if defaults.environment is None:
        raise click.UsageError(
            f"give ENVIRONMENT KEY, or name a default environment in {FILE_NAME} "
            "(defaults: environment: dev)"
        )
    return defaults.environment, names[0]


def _answer(secret: Secret) -> dict[str, object]:
    """The broker's answer, as the API gives it."""
    committed = secret.committed_at
    return {
        "environment": secret.environment,
        "key": secret.key,
        "value": secret.value,
        "version": secret.version,
        "committed_at": committed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if committed is not None
        else None,
    }
