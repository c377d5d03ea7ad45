"""Tokens minted the way the broker mints them, and waiting for room in a minute."""

from __future__ import annotations

import time

from broker.config import Config
from broker.scope import PERMISSIONS, Scope
from broker.tokens.claims import MintRequest, mint


def make_token(
    config: Config,
    *,
    environment: str = "*",
    key_pattern: str = "*",
    permissions: tuple[str, ...] = PERMISSIONS,
    usage_limit: int | None = None,
    ttl_minutes: int = 15,
    subject: str = "test-suite",
) -> str:
    request = MintRequest(
        subject, Scope(environment, key_pattern, permissions), ttl_minutes, usage_limit
    )
    token, _ = mint(request, config.keyring, issuer=config.jwt_issuer, audience=config.jwt_audience)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def minute_with_room(seconds: float = 15.0) -> None:
    """The failed-authentication throttle counts in fixed UTC minutes: a test that counts
    up to it starts with `seconds` of the minute left, so the window cannot turn under it
    (waits out the rest of the minute otherwise)."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.05)  # a clock boundary: nothing to poll
