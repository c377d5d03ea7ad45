"""vanta-cli token generate: mint a token through the broker, or offline with the key."""

from __future__ import annotations

import os

import click

from broker.scope import PERMISSIONS
from cli.client import DEFAULT_BROKER_URL, MintedToken, TokenRequest, VaultClient, VaultError
from cli.client_offline import mint_offline
from cli.errors import CliError


@click.group()
def token() -> None:
    """Mint tokens."""


@token.command(
    "generate",
    epilog="""\b
Examples:
  # the first issuer token, signed locally with VANTA_JWT_SECRET_KEY
  vanta-cli token generate --offline --subject ops --environment '*' \\
      --key-pattern '*' --permission tokens:issue --permission secrets:read \\
      --permission secrets:list --ttl 60

\b
  # a service token minted by the broker inside VANTA_TOKEN's scope
  vanta-cli token generate --subject billing-api --environment prod \\
      --key-pattern 'DATABASE_*' --ttl 15 --usage-limit 5
""",
)
@click.option("--subject", required=True, help="Who the token is for (1-128 printable characters).")
@click.option(
    "--environment", required=True, help="The environment it may read, or '*' for every one."
)
@click.option(
    "--key-pattern", required=True, help="Glob over key names: '*' any run, '?' one character."
)
@click.option(
    "--ttl",
    "ttl_minutes",
    type=click.IntRange(min=1),
    help="Lifetime in minutes (broker default 15; at most VANTA_MAX_TTL_MINUTES).",
)
@click.option(
    "--usage-limit",
    type=click.IntRange(min=1),
    help="How many successful reads it gives (default: unlimited).",
)
@click.option(
    "--permission",
    "permissions",
    multiple=True,
    type=click.Choice(PERMISSIONS),
    help="Repeatable. Default: secrets:read.",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Sign locally with VANTA_JWT_SECRET_KEY (or the first of VANTA_JWT_SECRET_KEYS); "
    "no broker involved.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer exactly.")
@click.option(
    "--broker-url",
    envvar="VANTA_BROKER_URL",
    default=DEFAULT_BROKER_URL,
    show_default=True,
    help="The broker [env: VANTA_BROKER_URL].",
)
@click.option(
    "--token",
    "issuer_token",
    envvar="VANTA_TOKEN",
    help="The issuer's token, with tokens:issue [env: VANTA_TOKEN].",
)
def generate(
    subject: str,
    environment: str,
    key_pattern: str,
    ttl_minutes: int | None,
    usage_limit: int | None,
    permissions: tuple[str, ...],
    offline: bool,
    as_json: bool,
    broker_url: str,
    issuer_token: str | None,
) -> None:
    """Mint a token scoped to one environment, a key pattern and some permissions.

    The new token must lie inside the issuer's (VANTA_TOKEN): same environment, a pattern
    within its pattern, a subset of its permissions. With --offline no issuer is needed:
    whoever holds the signing key may mint anything.
    """
    request = TokenRequest(
        subject=subject,
        environment=environment,
        key_pattern=key_pattern,
        ttl_minutes=ttl_minutes,
        usage_limit=usage_limit,
        permissions=permissions or None,
    )
    try:
        if offline:
            minted = mint_offline(request, os.environ)
        else:
            client = VaultClient(broker_url, issuer_token)
            if not client.has_token:
                raise CliError(
                    "no issuer token: pass --token or set VANTA_TOKEN "
                    "(or sign locally with --offline)"
                )
            minted = client.generate_token(request)
    except VaultError as exc:
        raise CliError(str(exc)) from None
    click.echo(minted.answer_json if as_json else describe(minted))


def describe(minted: MintedToken) -> str:
    """The token and its scope, for people."""
    scope = minted.scope
    rows = [
        ("token", minted.access_token),
        ("subject", scope.subject),
        ("environment", scope.environment),
        ("key pattern", scope.key_pattern),
        ("permissions", ", ".join(scope.permissions)),
        ("usage limit", "unlimited" if scope.usage_limit is None else str(scope.usage_limit)),
        ("expires", f"{scope.expires_at} (in {_duration(minted.expires_in)})"),
        ("jti", scope.jti),
    ]
    return "\n".join(f"{name + ':':<13} {value}" for name, value in rows)


def _duration(seconds: int) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
