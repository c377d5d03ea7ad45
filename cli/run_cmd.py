"""vanta-cli run-with-secrets: run a command with secrets in its environment or a file."""

from __future__ import annotations

import getpass
import os

import click

from cli.client import DEFAULT_BROKER_URL, Batch, VaultClient, VaultError
from cli.errors import CliError
from cli.run_inject import InjectionError, make_injection
from cli.run_secrets import (
    NameClash,
    describe,
    fetch_batch,
    reader_request,
    variables_for,
)
from cli.runner import InheritIO, signal_relay

EXAMPLES = """\b
Examples:
  # mint a one-use reader from VANTA_TOKEN, inject dev's DATABASE_* as env vars
  vanta-cli run-with-secrets --environment dev --key-pattern 'DATABASE_*' \\
      -- python manage.py migrate

\b
  # a dotenv file instead; the app loads $VANTA_SECRETS_FILE itself, e.g. with
  # python-dotenv: dotenv_values(os.environ["VANTA_SECRETS_FILE"], interpolate=False)
  vanta-cli run-with-secrets --environment prod --key-pattern '*' --inject-as file \\
      -- python app.py

\b
  # read with a token you already hold (VANTA_TOKEN is not used)
  vanta-cli run-with-secrets --environment dev --key-pattern '*' --token "$READER" -- env
"""


@click.command(
    "run-with-secrets",
    epilog=EXAMPLES,
    context_settings={"allow_interspersed_args": False},
)
@click.option("--environment", required=True, help="The environment to read from.")
@click.option(
    "--key-pattern",
    required=True,
    help="Glob over key names ('*' any run, '?' one character); every match is injected.",
)
@click.option(
    "--inject-as",
    type=click.Choice(["env", "file"]),
    default="env",
    show_default=True,
    help="env: one variable per key (API_KEYS/openai -> API_KEYS_OPENAI). "
    "file: a 0600 dotenv file at $VANTA_SECRETS_FILE, removed when the command ends.",
)
@click.option(
    "--token",
    "reader_token",
    help="Read with this token (secrets:read and secrets:list). Without it, a one-use "
    "reader good for 5 minutes is minted with VANTA_TOKEN as the issuer.",
)
@click.option(
    "--broker-url",
    envvar="VANTA_BROKER_URL",
    default=DEFAULT_BROKER_URL,
    show_default=True,
    help="The broker [env: VANTA_BROKER_URL].",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run_with_secrets(
    ctx: click.Context,
    environment: str,
    key_pattern: str,
    inject_as: str,
    reader_token: str | None,
    broker_url: str,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND with the secrets matching --key-pattern injected.

    All matching keys are fetched in one request before COMMAND starts; if that fails,
    COMMAND never runs. SIGINT, SIGTERM and SIGHUP are passed on to COMMAND, and its
    exit code is this command's (128+N if signal N killed it). Key names, never values,
    are reported on stderr.
    """
    batch = _fetch(broker_url, environment, key_pattern, reader_token)
    if not batch.values:
        raise CliError(
            f"no key in {environment} matches {key_pattern!r} inside the token's scope: "
            "nothing to inject"
        )
    try:
        variables = variables_for(environment, batch.values)
        injection = make_injection(inject_as, variables, _private_parent())
    except (NameClash, InjectionError) as exc:
        raise CliError(str(exc)) from None
    at = f" at {batch.version[:12]}" if batch.version else ""
    try:
        with signal_relay() as relay, injection as added:
            click.echo(
                f"vanta: injecting {len(variables)} key(s) from {environment}{at} "
                f"{injection.how}: {describe(variables)}",
                err=True,
            )
            status = relay.run(command, {**child_environment(), **added}, InheritIO())
    except InjectionError as exc:
        raise CliError(str(exc)) from None
    except FileNotFoundError:
        raise CliError(f"{command[0]}: command not found", exit_code=127) from None
    except OSError as exc:
        raise CliError(f"{command[0]}: cannot run: {exc.strerror}", exit_code=126) from None
    ctx.exit(status)


def _private_parent() -> str | None:
    """Where the secrets file's directory goes: the per-user runtime directory (a tmpfs on
    most Linux systems, so nothing reaches a disk) when there is one, else TMPDIR or /tmp."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return runtime if runtime and os.path.isdir(runtime) else None


def child_environment() -> dict[str, str]:
    """The CLI's environment less the issuer token: the command gets its secrets, not the
    power to mint more."""
    return {k: v for k, v in os.environ.items() if k != "VANTA_TOKEN"}


def _fetch(broker_url: str, environment: str, key_pattern: str, reader_token: str | None) -> Batch:
    """One batch read, with the given reader or one minted from VANTA_TOKEN."""
    try:
        if reader_token is None:
            issuer = VaultClient(broker_url)  # VANTA_TOKEN
            if not issuer.has_token:
                raise CliError(
                    "no token: pass --token (a reader) or set VANTA_TOKEN "
                    "(an issuer with tokens:issue)"
                )
            minted = issuer.generate_token(reader_request(environment, key_pattern, _subject()))
            reader_token = minted.access_token
        reader = VaultClient(broker_url, reader_token)  # never falls back to VANTA_TOKEN
        if not reader.has_token:
            raise CliError("--token is empty")
        return fetch_batch(reader, environment, key_pattern)
    except VaultError as exc:
        raise CliError(str(exc)) from None


def _subject() -> str:
    """Who the minted reader is for, as audit records will show it."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        return "run-with-secrets"
    return f"run-with-secrets:{user}"[:128]
