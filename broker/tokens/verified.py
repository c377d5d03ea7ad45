"""Tokens already verified, so a service presenting the same bearer token again costs a
dictionary lookup and a clock comparison instead of a full JWT parse and HMAC.

An entry records that this exact token string carries a valid HS256 signature by a key
of the keyring and these claims. The keyring is fixed at start-up, so that fact never
changes; only time does, and the time checks (`iat`, `nbf`, `exp`, with the same leeway
as `tokens.verify`, and the longest lifetime when `max_ttl_minutes` is given) are made
again on every hit. Revocation is not cached: the caller
checks it on every request, as before.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import orjson

from broker.config import Keyring
from broker.tokens.claims import LEEWAY_SECONDS, Claims, verify
from cli.caching import BoundedMemo

DEFAULT_MAX_ENTRIES = 4096  # per worker process; a full table is emptied and refilled


class VerifiedTokens:
    """`verify(token)` with the same answers as `tokens.verify`, remembered per token."""

    def __init__(
        self,
        keyring: Keyring,
        *,
        issuer: str,
        audience: str,
        max_ttl_minutes: int | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.audience = audience
        self.max_ttl_minutes = max_ttl_minutes
        self.max_entries = max_entries
        self.clock = clock
        # token -> (claims, valid from, valid until), both bounds with the leeway applied
        self._entries: BoundedMemo[str, tuple[Claims, float, float]] = BoundedMemo(max_entries)

    def verify(self, token: str) -> Claims:
        """The token's claims; raises TokenInvalid exactly when `tokens.verify` would."""
        entry = self._entries.get(token)
        if entry is not None and entry[1] <= self.clock() < entry[2]:
            return entry[0]
        limits: dict[str, int] = {}
        if self.max_ttl_minutes is not None:
            limits["max_ttl_minutes"] = self.max_ttl_minutes
        claims = verify(token, self.keyring, issuer=self.issuer, audience=self.audience, **limits)
        payload = orjson.loads(_segment(token.split(".")[1]))  # its signature was just checked
        valid_from = max(int(payload["iat"]), int(payload["nbf"])) - LEEWAY_SECONDS
        if self.max_ttl_minutes is not None:  # nor one that outlives the longest mintable
            valid_from = max(
                valid_from, claims.expires_at - self.max_ttl_minutes * 60 - LEEWAY_SECONDS
            )
        valid_until = int(payload["exp"]) + LEEWAY_SECONDS
        self._entries.put(token, (claims, valid_from, valid_until))
        return claims


def _segment(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
