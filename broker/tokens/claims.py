"""Token claims: building, minting, signing and verifying HS256 JWTs.

The broker and `vanta-cli token generate --offline` both mint through `mint()`, so a
token made offline is exactly the token the broker would have made.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from broker.config import Keyring
from broker.errors import BadRequest, TokenInvalid
from broker.scope import (
    ALL,
    PERMISSIONS,
    Scope,
    check_environment,
    check_pattern,
    is_environment,
    is_pattern,
)

ALGORITHM = "HS256"
LEEWAY_SECONDS = 30
MAX_TOKEN_LENGTH = 8192
DEFAULT_TTL_MINUTES = 15
DEFAULT_PERMISSIONS = ("secrets:read",)
MAX_USAGE_LIMIT = 2**53  # what every JSON reader holds exactly
MAX_EPOCH = 2**53
_REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "nbf", "exp", "jti"]


@dataclass(frozen=True)
class Claims:
    subject: str
    scope: Scope
    jti: str
    issued_at: int
    expires_at: int
    usage_limit: int | None

    def has(self, permission: str) -> bool:
        return permission in self.scope.permissions


@dataclass(frozen=True)
class MintRequest:
    subject: str
    scope: Scope
    ttl_minutes: int
    usage_limit: int | None

    @classmethod
    def from_json(cls, body: object, max_ttl_minutes: int) -> MintRequest:
        """Validate a token request body; raise BadRequest naming the first bad field."""
        if not isinstance(body, Mapping):
            raise BadRequest("the body must be a JSON object")
        unknown = set(body) - {
            "subject",
            "environment",
            "key_pattern",
            "ttl_minutes",
            "usage_limit",
            "permissions",
        }
        if unknown:
            raise BadRequest(f"unknown field: {sorted(unknown)[0][:64]}")
        subject = body.get("subject")
        if not (isinstance(subject, str) and 1 <= len(subject) <= 128 and subject.isprintable()):
            raise BadRequest("subject must be 1-128 printable characters")
        raw_environment = body.get("environment")
        environment = ALL if raw_environment == ALL else check_environment(raw_environment)
        key_pattern = check_pattern(body.get("key_pattern"))
        ttl = body.get("ttl_minutes", DEFAULT_TTL_MINUTES)
        if not _is_int(ttl) or not 1 <= ttl <= max_ttl_minutes:
            raise BadRequest(f"ttl_minutes must be a whole number from 1 to {max_ttl_minutes}")
        usage_limit = body.get("usage_limit")
        if usage_limit is not None and (not _is_int(usage_limit) or usage_limit < 1):
            raise BadRequest("usage_limit must be a whole number of at least 1, or null")
        if usage_limit is not None and usage_limit > MAX_USAGE_LIMIT:
            raise BadRequest("usage_limit is too large")
        permissions = body.get("permissions", list(DEFAULT_PERMISSIONS))
        if (
            not isinstance(permissions, list)
            or not permissions
            or not all(isinstance(p, str) and p in PERMISSIONS for p in permissions)
        ):
            raise BadRequest(f"permissions must be a non-empty list drawn from {list(PERMISSIONS)}")
        ordered = tuple(p for p in PERMISSIONS if p in permissions)
        return cls(subject, Scope(environment, key_pattern, ordered), ttl, usage_limit)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def new_jti() -> str:
    """192 random bits, URL-safe, never beginning with "-": a jti is pasted on command
    lines (`vanta-cli token revoke JTI`), where a leading "-" reads as an option."""
    while True:
        jti = secrets.token_urlsafe(24)
        if not jti.startswith("-"):
            return jti


def mint(
    request: MintRequest,
    keyring: Keyring,
    *,
    issuer: str,
    audience: str,
    not_after: int | None = None,
    now: int | None = None,
) -> tuple[str, Claims]:
    """Sign a token for `request`; its expiry is cut to `not_after` (the issuer's) if sooner."""
    issued_at = int(time.time()) if now is None else now
    expires_at = issued_at + request.ttl_minutes * 60
    if not_after is not None:
        expires_at = min(expires_at, not_after)
    claims = Claims(
        subject=request.subject,
        scope=request.scope,
        jti=new_jti(),
        issued_at=issued_at,
        expires_at=expires_at,
        usage_limit=request.usage_limit,
    )
    payload = {
        "iss": issuer,
        "aud": audience,
        "sub": claims.subject,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": expires_at,
        "jti": claims.jti,
        "scope": {
            "environment": claims.scope.environment,
            "key_pattern": claims.scope.key_pattern,
            "permissions": list(claims.scope.permissions),
        },
        "usage_limit": claims.usage_limit,
    }
    kid, key = keyring.signing
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, key.reveal(), algorithm=ALGORITHM, headers=headers), claims


def mint_answer(token: str, claims: Claims, now: int | None = None) -> dict[str, Any]:
    """The JSON answer of POST /api/v1/vault/tokens/generate."""
    current = int(time.time()) if now is None else now
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": max(0, claims.expires_at - current),
        "scope_details": {
            "subject": claims.subject,
            "environment": claims.scope.environment,
            "key_pattern": claims.scope.key_pattern,
            "permissions": list(claims.scope.permissions),
            "usage_limit": claims.usage_limit,
            "jti": claims.jti,
            "expires_at": rfc3339(claims.expires_at),
        },
    }


def rfc3339(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def verify(
    token: str,
    keyring: Keyring,
    *,
    issuer: str,
    audience: str,
    max_ttl_minutes: int | None = None,
) -> Claims:
    """Check signature, algorithm, times, issuer, audience and claim shapes; with
    `max_ttl_minutes`, also refuse a token that would outlive the longest mintable one.

    Raises TokenInvalid with one generic message whatever failed.
    """
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise TokenInvalid()
    try:
        header = jwt.get_unverified_header(token)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenInvalid()
        key = keyring.lookup(kid)
        if key is None:
            raise TokenInvalid()
        payload = jwt.decode(
            token,
            key.reveal(),
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": _REQUIRED_CLAIMS},
        )
    except (jwt.PyJWTError, ValueError, TypeError):
        raise TokenInvalid() from None
    claims = _claims_from_payload(payload)
    if max_ttl_minutes is not None:
        if claims.expires_at > time.time() + max_ttl_minutes * 60 + LEEWAY_SECONDS:
            raise TokenInvalid()
    return claims


def _claims_from_payload(payload: Mapping[str, Any]) -> Claims:
    scope = payload.get("scope")
    if not isinstance(scope, Mapping):
        raise TokenInvalid()
    environment = scope.get("environment")
    pattern = scope.get("key_pattern")
    permissions = scope.get("permissions")
    usage_limit = payload.get("usage_limit")
    subject, jti = payload.get("sub"), payload.get("jti")
    if not (
        (environment == ALL or is_environment(environment))
        and is_pattern(pattern)
        and isinstance(permissions, list)
        and all(isinstance(p, str) for p in permissions)
        and (usage_limit is None or (_is_int(usage_limit) and 1 <= usage_limit <= MAX_USAGE_LIMIT))
        and isinstance(subject, str)
        and isinstance(jti, str)
        and 1 <= len(jti) <= 256
        and _is_int(payload.get("exp"))
        and _is_int(payload.get("iat"))
        and payload["exp"] < MAX_EPOCH
        and payload["iat"] < MAX_EPOCH
    ):
        raise TokenInvalid()
    known = tuple(p for p in PERMISSIONS if p in permissions)
    return Claims(
        subject=subject,
        scope=Scope(str(environment), str(pattern), known),  # both checked above
        jti=jti,
        issued_at=payload["iat"],
        expires_at=payload["exp"],
        usage_limit=usage_limit,
    )
