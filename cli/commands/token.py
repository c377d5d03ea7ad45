"""vanta-cli token generate | lookup | revoke: mint a token (through the broker, or offline
with the signing key), show what one may do, revoke one."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import click

from broker.scope import PERMISSIONS
from cli.client import (
    DEFAULT_BROKER_URL,
    BadRequest,
    BrokerUnavailable,
    MintedToken,
    NotFound,
    TokenInvalid,
    TokenRequest,
    TokenRevoked,
    VaultClient,
    VaultError,
)
from cli.errors import CliError
from cli.names import (
    check_option,
    checkout_environments,
    environment_problem,
    pattern_problem,
    unknown_environment_note,
)
from cli.project_defaults import DefaultsError, load_defaults
from cli.tokens.claims import TokenClaims, expiry_text, read_claims, rfc3339, span
from cli.tokens.hints import TokenSource, explain, with_flags
from cli.tokens.input import chosen_token, token_options
from cli.tokens.offline import mint_offline

_broker_url = click.option(
    "--broker-url",
    envvar="VANTA_BROKER_URL",
    default=DEFAULT_BROKER_URL,
    show_default=True,
    help="The broker [env: VANTA_BROKER_URL].",
)


@click.group()
def token() -> None:
    """Mint, inspect and revoke tokens."""


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

\b
  # for a script: the token alone
  vanta-cli token generate --subject ci --environment dev --key-pattern '*' \\
      --json | jq -r .access_token
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
    metavar="MINUTES",
    help="Lifetime in minutes (broker default 15; at most VANTA_MAX_TTL_MINUTES).",
)
@click.option(
    "--usage-limit",
    type=click.IntRange(min=1),
    metavar="N",
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
@_broker_url
@token_options("the issuer token (tokens:issue)")
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
    token: str | None,
    token_file: str | None,
) -> None:
    """Mint a token scoped to one environment, a key pattern and some permissions.

    The new token must lie inside the issuer's (VANTA_TOKEN): same environment, a pattern
    within its pattern, a subset of its permissions. With --offline no issuer is needed:
    whoever holds the signing key may mint anything. An environment that does not exist
    (yet) can be named: the token is minted, and a note on stderr says so.
    """
    if not (1 <= len(subject) <= 128 and subject.isprintable()):
        raise click.BadParameter("must be 1 to 128 printable characters", param_hint="'--subject'")
    check_option(environment_problem(environment, allow_all=True), "--environment")
    check_option(pattern_problem(key_pattern), "--key-pattern")
    request = TokenRequest(
        subject=subject,
        environment=environment,
        key_pattern=key_pattern,
        ttl_minutes=ttl_minutes,
        usage_limit=usage_limit,
        permissions=permissions or None,
    )
    source = TokenSource("VANTA_TOKEN", None) if offline else chosen_token(token, token_file)
    issuer = None
    try:
        if offline:
            minted = mint_offline(request, os.environ)
        else:
            if source.token is None:
                raise CliError(
                    "no issuer token: set VANTA_TOKEN or give --token-file FILE "
                    "(or sign locally with --offline)"
                )
            issuer = VaultClient(broker_url, source.token, cache_ttl=0)
            minted = issuer.generate_token(request)
    except BadRequest as exc:
        raise CliError(with_flags(str(exc))) from None
    except VaultError as exc:
        raise CliError(explain(exc, source, minting=True)) from None
    _note_unknown_environment(environment, issuer)
    click.echo(minted.answer_json if as_json else describe(minted))


def _note_unknown_environment(environment: str, issuer: VaultClient | None) -> None:
    """Say on stderr when `environment` does not exist. The checkout in the current
    directory answers first; when it lacks the environment, or there is none, the broker
    is asked with the issuer (a key list, which uses no read), when the issuer may list."""
    if environment == "*":
        return
    known = checkout_environments()
    if known is not None and environment in known.names:
        return
    served = None
    if issuer is not None:
        try:
            issuer.list_keys(environment, "*")
            served = True
        except NotFound as exc:
            served = False if "environment" in exc.message else None
        except VaultError:
            pass  # the issuer may not list: the checkout is all there is to go by
    if served:
        return
    note = unknown_environment_note(environment, known)
    if served is False:
        where = f": {note}" if note else ""
        click.echo(
            f"vanta: note: the broker serves no environment {environment!r} (yet){where}; "
            "the token is minted for it all the same",
            err=True,
        )
    elif note is not None:
        click.echo(
            f"vanta: note: no environment {environment!r} here: {note}; the token is minted "
            "for it all the same",
            err=True,
        )


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
        ("expires", f"{scope.expires_at} (in {span(minted.expires_in)})"),
        ("jti", scope.jti),
    ]
    return _table(rows)


def _table(rows: list[tuple[str, str]]) -> str:
    return "\n".join(f"{name + ':':<13} {value}" for name, value in rows)


# -- lookup ------------------------------------------------------------------------------------


@token.command(
    "lookup",
    epilog="""\b
Examples:
  vanta-cli token lookup
  vanta-cli token lookup --token-file reader.jwt
  vanta-cli token lookup --json | jq -r .expires_at
""",
)
@click.option("--json", "as_json", is_flag=True, help="Print the details as a JSON object.")
@click.option(
    "--offline",
    is_flag=True,
    help="Only read the token's own claims; do not ask the broker whether it accepts it.",
)
@_broker_url
@token_options("the token to look up")
def lookup(
    as_json: bool, offline: bool, broker_url: str, token: str | None, token_file: str | None
) -> None:
    """Show what a token (VANTA_TOKEN by default) may do, and until when; never the token.

    Its scope, permissions, usage limit and expiry come from its own claims (read without
    the signing key); then the broker is asked whether it accepts the token (a key list,
    which uses none of a usage-limited token's reads; the token's environment, or for a
    '*' token the default environment of .vanta.yaml or of this checkout). The broker does
    not report how many reads a usage-limited token has left. Exits 1 when the broker
    refuses the token or has revoked it.
    """
    source = chosen_token(token, token_file)
    if source.token is None:
        raise CliError("no token: set VANTA_TOKEN, or give --token-file FILE")
    claims = read_claims(source.token)
    if claims is None:
        raise CliError(f"{source.name} is not a Vanta token (a JWT with a scope)")
    if offline:
        verdict = Verdict("not asked", None, "--offline")
    else:
        verdict = _ask(broker_url, source, claims)
    if as_json:
        click.echo(json.dumps(_lookup_json(claims, verdict, broker_url), indent=2))
    else:
        click.echo(_lookup_table(claims, verdict, broker_url))
    if verdict.status in ("refused", "revoked", "unreachable"):
        raise CliError(verdict.detail or verdict.status)


@dataclass(frozen=True)
class Verdict:
    """What the broker said of a token: accepted, refused, revoked, unreachable, not asked."""

    status: str
    error: str | None  # the broker's error code, if any
    detail: str | None  # one line for people


def _probe_environment(claims: TokenClaims) -> str | None:
    if claims.environment != "*":
        return claims.environment
    try:
        default = load_defaults().environment
    except DefaultsError:
        default = None
    if default is not None:
        return default
    known = checkout_environments()
    return known.names[0] if known is not None and known.names else None


def _ask(broker_url: str, source: TokenSource, claims: TokenClaims) -> Verdict:
    environment = _probe_environment(claims)
    if environment is None:
        return Verdict("not asked", None, "an every-environment token, and no environment known")
    client = VaultClient(broker_url, source.token, cache_ttl=0, retries=1)
    try:
        client.list_keys(environment, claims.key_pattern)
    except TokenInvalid as exc:
        return Verdict("refused", exc.code, explain(exc, source))
    except TokenRevoked as exc:
        return Verdict("revoked", exc.code, f"{exc}: {source.name} was revoked")
    except BrokerUnavailable as exc:
        return Verdict("unreachable", None, f"the broker did not answer: {exc}")
    except VaultError as exc:
        code = getattr(exc, "code", None)
        if code in ("rate_limited",) or getattr(exc, "status", 0) >= 500:
            return Verdict("unreachable", code, f"the broker could not tell: {exc}")
        # a missing permission, environment or key still means the token itself was accepted
    return Verdict("accepted", None, None)


def _lookup_table(claims: TokenClaims, verdict: Verdict, broker_url: str) -> str:
    now = time.time()
    limit = claims.usage_limit
    rows = [
        ("subject", claims.subject),
        ("environment", claims.environment),
        ("key pattern", claims.key_pattern),
        ("permissions", ", ".join(claims.permissions)),
        ("usage limit", "unlimited" if limit is None else str(limit)),
        ("uses left", "unlimited" if limit is None else f"not reported (at most {limit})"),
    ]
    if claims.issued_at is not None:
        rows.append(("issued", rfc3339(claims.issued_at)))
    rows.append(("expires", expiry_text(claims, now)))
    rows.append(("jti", claims.jti))
    if claims.key_id is not None:
        rows.append(("signing key", claims.key_id))
    broker = {
        "accepted": f"accepted by {broker_url}",
        "revoked": f"revoked ({broker_url})",
        "refused": f"refused by {broker_url}",
        "unreachable": f"no answer from {broker_url}",
        "not asked": f"not asked ({verdict.detail})",
    }[verdict.status]
    rows.append(("broker", broker))
    return _table(rows)


def _lookup_json(claims: TokenClaims, verdict: Verdict, broker_url: str) -> dict[str, object]:
    return {
        "subject": claims.subject,
        "environment": claims.environment,
        "key_pattern": claims.key_pattern,
        "permissions": list(claims.permissions),
        "usage_limit": claims.usage_limit,
        "issued_at": rfc3339(claims.issued_at) if claims.issued_at is not None else None,
        "expires_at": rfc3339(claims.expires_at),
        "expired": claims.expired(),
        "jti": claims.jti,
        "kid": claims.key_id,
        "broker": {"url": broker_url, "status": verdict.status, "error": verdict.error},
    }


# -- revoke ------------------------------------------------------------------------------------


@token.command(
    "revoke",
    epilog="""\b
Examples:
  vanta-cli token revoke 9iV0cD5q...           # by jti, with VANTA_TOKEN as the issuer
  vanta-cli token revoke -- -Xf3k...           # a jti minted elsewhere that begins with -
  vanta-cli token revoke --self --token-file leaked.jwt
""",
)
@click.argument("jti", required=False)
@click.option(
    "--self",
    "revoke_self",
    is_flag=True,
    help="Revoke the token itself (VANTA_TOKEN, or --token-file) instead of a jti.",
)
@_broker_url
@token_options("the token to use (for a JTI, an issuer with tokens:issue)")
def revoke(
    jti: str | None,
    revoke_self: bool,
    broker_url: str,
    token: str | None,
    token_file: str | None,
) -> None:
    """Revoke the token with this JTI, or with --self the token you hold.

    From the next request on the broker answers the token 403 token_revoked, in every
    worker and every broker sharing its state. Revoking by JTI needs an issuer
    (tokens:issue) whose environment and pattern contain the token's; the JTI is in
    `token generate`'s output, `token lookup` and the audit trail. Any token can revoke
    itself.
    """
    if (jti is None) == (not revoke_self):
        raise click.UsageError("give a JTI, or --self (not both)")
    source = chosen_token(token, token_file)
    if source.token is None:
        raise CliError("no token: set VANTA_TOKEN, or give --token-file FILE")
    client = VaultClient(broker_url, source.token, cache_ttl=0)
    try:
        revoked = client.revoke_self() if revoke_self else client.revoke(jti or "")
    except BadRequest as exc:
        raise CliError(f"{exc}: JTI must be 1 to 256 printable characters") from None
    except VaultError as exc:
        raise CliError(explain(exc, source)) from None
    click.echo(f"revoked: {revoked}" + (f" ({source.name})" if revoke_self else ""))
