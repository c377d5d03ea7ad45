"""What a token says about itself, read without its signing key.

The CLI holds the tokens it uses, so it can read their claims (scope, expiry, usage limit)
to explain a refusal or to show a token, but it cannot check the signature: nothing here
is trusted for access. The broker alone decides; these claims only make its answers
readable ("VANTA_TOKEN expired at ...", "VANTA_TOKEN cannot mint").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt

from broker.tokens.claims import LEEWAY_SECONDS

ISSUE = "tokens:issue"


@dataclass(frozen=True)
class TokenClaims:
    """A token's claims as it states them (unverified)."""

    subject: str
    environment: str
    key_pattern: str
    permissions: tuple[str, ...]
    usage_limit: int | None
    jti: str
    issued_at: int | None
    expires_at: int
    key_id: str | None

    @property
    def can_mint(self) -> bool:
        """Whether the broker would let it mint: tokens:issue and no usage limit."""
        return ISSUE in self.permissions and self.usage_limit is None

    def expired(self, now: float | None = None) -> bool:
        """Past `exp`: no more minting; reads end LEEWAY_SECONDS later."""
        return (time.time() if now is None else now) >= self.expires_at

    def read_until(self) -> int:
        """The last second the broker accepts it for reads (its clock-skew leeway)."""
        return self.expires_at + LEEWAY_SECONDS


def read_claims(token: str | None) -> TokenClaims | None:
    """The claims of `token`, or None when it is not a token of this shape."""
    if not token:
        return None
    try:
        header = jwt.get_unverified_header(token)
        payload = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    scope = payload.get("scope")
    exp = payload.get("exp")
    if not isinstance(scope, dict) or not isinstance(exp, int) or isinstance(exp, bool):
        return None
    permissions = scope.get("permissions")
    limit = payload.get("usage_limit")
    iat = payload.get("iat")
    kid = header.get("kid")
    return TokenClaims(
        subject=str(payload.get("sub", "")),
        environment=str(scope.get("environment", "")),
        key_pattern=str(scope.get("key_pattern", "")),
        permissions=tuple(str(p) for p in permissions) if isinstance(permissions, list) else (),
        usage_limit=limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
        jti=str(payload.get("jti", "")),
        issued_at=iat if isinstance(iat, int) and not isinstance(iat, bool) else None,
        expires_at=exp,
        key_id=kid if isinstance(kid, str) else None,
    )


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def span(seconds: float) -> str:
    """`2h 05m`, `14m 09s`, `9s`: a duration for people."""
    seconds = int(abs(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def expiry_text(claims: TokenClaims, now: float | None = None) -> str:
    """`2026-01-01T00:15:00Z (in 14m 09s)` or `... (expired 3m 02s ago)`."""
    now = time.time() if now is None else now
    left = claims.expires_at - now
    when = f"in {span(left)}" if left > 0 else f"expired {span(left)} ago"
    return f"{rfc3339(claims.expires_at)} ({when})"
