"""Dashboard sessions and CSRF tokens, shared by every worker and every broker.

The session is a cookie holding the user's token sealed with AES-256-GCM under a key
derived (HKDF) from the signing key: any worker of any broker with that key can open it,
and nothing is kept in one process's memory. The token is never stored on the server.
Sign-out records the session id in the token state store (SQLite or Redis, as revocations
are), so a copy of the cookie is refused everywhere afterwards. A session never outlives
its token: the cookie expires with it and the token is verified on every request.

CSRF tokens are an HMAC of a random per-browser id kept in its own cookie: a token issued
to another browser carries another id and is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from broker.tokens.claims import Claims

SESSION_COOKIE = "vanta_session"
BROWSER_COOKIE = "vanta_browser"
COOKIE_PATH = "/ui"
MAX_COOKIE_BYTES = 4000  # browsers drop cookies past ~4 KiB
_ENDED_PREFIX = "ui-session:"  # session ids share the revocation store with token jtis
_AAD = b"vanta-ui-session-v1"
_NONCE_BYTES = 12


def _derive(signing_key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(signing_key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    """A signed-in browser: the session id, the token it was opened with and its claims."""

    session_id: str
    token: str
    claims: Claims

    @property
    def ended_marker(self) -> str:
        return ended_marker(self.session_id)


def ended_marker(session_id: str) -> str:
    """The id under which sign-out of this session is recorded in the token state store."""
    return _ENDED_PREFIX + session_id


class SessionSealer:
    """Seals and opens session cookies; makes and checks CSRF tokens."""

    def __init__(self, signing_key: str) -> None:
        material = signing_key.encode()
        self._aead = AESGCM(_derive(material, b"vanta ui session cookie"))
        self._csrf_key = _derive(material, b"vanta ui csrf")

    def seal(self, session_id: str, token: str, expires_at: int) -> str:
        payload = json.dumps({"sid": session_id, "tok": token, "exp": expires_at}).encode()
        nonce = os.urandom(_NONCE_BYTES)
        return _b64(nonce + self._aead.encrypt(nonce, payload, _AAD))

    def open(self, cookie: str) -> tuple[str, str, int] | None:
        """(session id, token, expiry) from a cookie this key sealed, else None."""
        try:
            raw = _unb64(cookie)
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD)
            payload = json.loads(plain)
            session_id, token, expires_at = payload["sid"], payload["tok"], payload["exp"]
        except (InvalidTag, ValueError, binascii.Error, KeyError, TypeError):
            return None
        if not (isinstance(session_id, str) and isinstance(token, str)):
            return None
        if not isinstance(expires_at, int) or expires_at <= time.time():
            return None
        return session_id, token, expires_at

    def csrf_token(self, browser_id: str) -> str:
        digest = hmac.new(self._csrf_key, browser_id.encode(), hashlib.sha256).digest()
        return _b64(digest)

    def csrf_valid(self, browser_id: str | None, token: str | None) -> bool:
        if not browser_id or not token:
            return False
        return hmac.compare_digest(self.csrf_token(browser_id), token)


def new_session_id() -> str:
    return secrets.token_urlsafe(24)


def new_browser_id() -> str:
    return secrets.token_urlsafe(24)
