"""Broker refusals turned into errors that say what to do.

The broker's answers are generic on purpose (a 401 never says which check failed). The
CLI holds the token it sent and can read its claims (`cli.tokens.claims`, unverified), and
it may know the checkout's environments (`cli.names`): enough to add what the user needs,
never the token itself.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from cli.client import NotFound, PermissionDenied, TokenInvalid, VaultError
from cli.names import checkout_environments, unknown_environment_note
from cli.tokens.claims import ISSUE, read_claims, rfc3339, span

_MISSING_ENVIRONMENT = re.compile(r"environment '([a-z0-9][a-z0-9_-]*)' not found")
# The API's field names, as the broker's 400 messages give them, and the flags users type.
_FLAGS = {
    "ttl_minutes": "--ttl",
    "usage_limit": "--usage-limit",
    "key_pattern": "--key-pattern",
    "subject": "--subject",
    "environment": "--environment",
    "permissions": "--permission",
}


@dataclass(frozen=True)
class TokenSource:
    """The token a command used and how the user gave it (`VANTA_TOKEN`, `--token-file
    reader.jwt`, ...), for messages; the token itself is never shown."""

    name: str
    token: str | None = field(repr=False)


def explain(exc: VaultError, source: TokenSource | None = None, minting: bool = False) -> str:
    """`str(exc)` and, where the CLI can tell, what went wrong and what to do."""
    text = str(exc)
    hint = None
    if isinstance(exc, TokenInvalid) and source is not None:
        hint = _invalid_hint(source, minting)
    elif isinstance(exc, PermissionDenied) and source is not None and ISSUE in exc.message:
        hint = _reader_hint(source)
    elif isinstance(exc, NotFound):
        hint = _environment_hint(exc.message)
    return f"{text}: {hint}" if hint else text


def with_flags(message: str) -> str:
    """A broker 400 message about a token request, with the API's field names replaced by
    the flags of `vanta-cli token generate`."""
    for name, flag in _FLAGS.items():
        message = re.sub(rf"\b{name}\b", flag, message)
    return message


def _invalid_hint(source: TokenSource, minting: bool) -> str | None:
    claims = read_claims(source.token)
    if claims is None:
        return f"{source.name} is not a Vanta token (a JWT)"
    now = time.time()
    if not claims.expired(now):
        return (
            f"{source.name} (jti {claims.jti}) was refused: not signed with this broker's "
            "key, or meant for another issuer or audience"
        )
    ago = span(now - claims.expires_at)
    text = f"{source.name} expired at {rfc3339(claims.expires_at)} ({ago} ago)"
    if minting and now < claims.read_until():
        text += "; reads are still allowed for 30 s after expiry, minting is not"
    return text + ": get a new token"


def _reader_hint(source: TokenSource) -> str | None:
    claims = read_claims(source.token)
    if claims is None:
        return None
    if claims.usage_limit is not None and ISSUE in claims.permissions:
        return f"{source.name} has a usage limit ({claims.usage_limit}), so it cannot mint"
    permissions = ", ".join(claims.permissions) or "none"
    return (
        f"{source.name} is a reader ({permissions}), not an issuer: it can read "
        "(vanta-cli get, or vanta-cli run-with-secrets, which reads with a VANTA_TOKEN "
        "that cannot mint; pass a reader with --token-file FILE), but minting needs a "
        "token with tokens:issue"
    )


def _environment_hint(message: str) -> str | None:
    found = _MISSING_ENVIRONMENT.search(message)
    if found is None:
        return None
    return unknown_environment_note(found.group(1), checkout_environments())
