"""Rate limits on the `limits` library: a per-token limit and the always-on
failed-authentication throttle, shared by every worker (SQLite) or broker (Redis).

The throttle counts 401s per client address in fixed UTC minutes: more than the
allowance makes every request from that address 429 until the minute is over.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from limits import (
    RateLimitItem,
    RateLimitItemPerHour,
    RateLimitItemPerMinute,
    RateLimitItemPerSecond,
)
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter

from broker.errors import StateUnavailable
from broker.state.counters import THROTTLES, SharedCounters
from broker.state.sqlite import thread_connection

AUTHFAIL_PREFIX = "vanta/authfail/"

_RATE_RE = re.compile(r"\s*(\d+)\s*/\s*(second|minute|hour)\s*")
_ITEMS = {
    "second": RateLimitItemPerSecond,
    "minute": RateLimitItemPerMinute,
    "hour": RateLimitItemPerHour,
}


def parse_rate(text: str) -> RateLimitItem:
    """`N/second`, `N/minute` or `N/hour`; ValueError otherwise."""
    match = _RATE_RE.fullmatch(text)
    if not match or int(match.group(1)) < 1:
        raise ValueError(text)
    return _ITEMS[match.group(2)](int(match.group(1)))


class SqliteLimitStorage(Storage):
    """A `limits` storage in the broker's SQLite state file, so that every worker
    process of one broker shares the counters. One statement per hit."""

    STORAGE_SCHEME = ["vanta-sqlite"]

    def __init__(
        self,
        path: Path,
        connect: Callable[[], sqlite3.Connection] | None = None,
        **options: float | str | bool,
    ) -> None:
        """`connect` gives this thread's connection to `path`, to share the token state's
        (one page cache per thread: a usage count written is no other connection's news)."""
        super().__init__(None, wrap_exceptions=False)
        self.path = path
        self._local = threading.local()
        self._connect = connect
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn().execute(
            "CREATE TABLE IF NOT EXISTS rate_limits (key TEXT PRIMARY KEY, "
            "count INTEGER NOT NULL, expires_at REAL NOT NULL)"
        )

    @property
    def base_exceptions(self) -> type[Exception]:
        return sqlite3.Error

    def _conn(self) -> sqlite3.Connection:
        if self._connect is not None:
            return self._connect()
        return thread_connection(self._local, self.path)

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        now = time.time()
        row = (
            self._conn()
            .execute(
                "INSERT INTO rate_limits (key, count, expires_at) VALUES (?1, ?2, ?3) "
                "ON CONFLICT (key) DO UPDATE SET "
                "count = CASE WHEN expires_at <= ?4 THEN ?2 ELSE count + ?2 END, "
                "expires_at = CASE WHEN expires_at <= ?4 THEN ?3 ELSE expires_at END "
                "RETURNING count",
                (key, amount, now + expiry, now),
            )
            .fetchone()
        )
        return int(row[0])

    def get(self, key: str) -> int:
        row = (
            self._conn()
            .execute(
                "SELECT count FROM rate_limits WHERE key = ? AND expires_at > ?", (key, time.time())
            )
            .fetchone()
        )
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        row = (
            self._conn()
            .execute("SELECT expires_at FROM rate_limits WHERE key = ?", (key,))
            .fetchone()
        )
        return float(row[0]) if row else time.time()

    def check(self) -> bool:
        try:
            self._conn().execute("SELECT 1")
        except sqlite3.Error:
            return False
        return True

    def reset(self) -> int | None:
        return self._conn().execute("DELETE FROM rate_limits").rowcount

    def clear(self, key: str) -> None:
        self._conn().execute("DELETE FROM rate_limits WHERE key = ?", (key,))

    def prune(self) -> None:
        self._conn().execute("DELETE FROM rate_limits WHERE expires_at < ?", (time.time(),))

    def keys_over(self, prefix: str, count: int) -> frozenset[str]:
        """The live keys starting with `prefix` whose count is over `count`."""
        rows = (
            self._conn()
            .execute(
                "SELECT key FROM rate_limits WHERE substr(key, 1, ?) = ? AND count > ? "
                "AND expires_at > ?",
                (len(prefix), prefix, count, time.time()),
            )
            .fetchall()
        )
        return frozenset(row[0] for row in rows)


@dataclass
class RateLimits:
    """Answers "may this go on?"; a number is the Retry-After in whole seconds.

    With `counters` (SQLite storage, one broker) the throttled addresses are remembered per
    process and reread only when some worker throttles a new one, so the check on every
    request costs no query; without them (Redis, several brokers) every check asks."""

    storage: Storage
    per_token: RateLimitItem | None
    auth_failures_per_minute: int
    counters: SharedCounters | None = None
    _last_prune: float = 0.0
    # (throttle counter when read, the throttled minute keys then): replaced whole
    _throttled: tuple[int, frozenset[str]] = (-1, frozenset())

    def __post_init__(self) -> None:
        self._limiter = FixedWindowRateLimiter(self.storage)
        if not isinstance(self.storage, SqliteLimitStorage):
            self.counters = None

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:
            if isinstance(exc, self.storage.base_exceptions):
                raise StateUnavailable() from None
            raise

    @staticmethod
    def _minute_key(address: str) -> tuple[str, int]:
        now = time.time()
        return f"{AUTHFAIL_PREFIX}{address}/{int(now // 60)}", math.ceil(60 - now % 60) or 1

    def throttled(self, address: str) -> int | None:
        """Retry-After when `address` passed its failed-authentication allowance."""
        if self.auth_failures_per_minute <= 0:
            return None
        key, retry_after = self._minute_key(address)
        if self.counters is None:
            over = self._guard(self.storage.get, key) > self.auth_failures_per_minute
        else:
            seen = self.counters.read(THROTTLES)
            known = self._throttled
            if known[0] != seen:  # the counter first: a throttle counted later rereads
                keys = self._guard(
                    self.storage.keys_over,  # type: ignore[attr-defined]
                    AUTHFAIL_PREFIX,
                    self.auth_failures_per_minute,
                )
                known = self._throttled = (seen, keys)
            over = key in known[1]  # the key names its minute: a past minute never matches
        return retry_after if over else None

    def note_auth_failure(self, address: str) -> None:
        if self.auth_failures_per_minute <= 0:
            return
        key, _ = self._minute_key(address)
        count = self._guard(self.storage.incr, key, 61)
        if count == self.auth_failures_per_minute + 1 and self.counters is not None:
            self.counters.bump(THROTTLES)  # this address is throttled from now on
        self._maybe_prune()

    def hit_token(self, jti: str) -> int | None:
        """Count one request of token `jti`; Retry-After when it is over its rate."""
        if self.per_token is None:
            return None
        if self._guard(self._limiter.hit, self.per_token, "vanta/token", jti):
            return None
        stats = self._guard(self._limiter.get_window_stats, self.per_token, "vanta/token", jti)
        return max(1, math.ceil(stats.reset_time - time.time()))

    def _maybe_prune(self) -> None:
        prune = getattr(self.storage, "prune", None)
        if prune is not None and time.time() - self._last_prune > 300:
            self._last_prune = time.time()
            self._guard(prune)
