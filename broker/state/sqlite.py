"""Token state: usage counts, revocations and the scopes of minted tokens.

One small interface, `TokenState`; `SqliteTokenState` keeps it on one host, for every
worker process of a broker: revocations and minted scopes in one SQLite file, usage
counts in a memory-mapped table beside it (broker.state.table) where "use one if any are
left" is one step under a lock, so a usage limit is exact under any concurrency.
Failures raise StateUnavailable: the caller answers 503 and no secret leaves without its
use counted.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from broker.errors import StateUnavailable
from broker.state.counters import REVOCATIONS, SharedCounters, counters_path
from broker.state.table import Overflow, UsageTable, table_path

RETENTION_SECONDS = 3600  # state outlives its token by an hour, then is pruned


@dataclass(frozen=True)
class MintedToken:
    jti: str
    environment: str
    key_pattern: str
    expires_at: int


class TokenState(Protocol):
    def use_one(self, jti: str, limit: int, expires_at: int) -> bool:
        """Count one use if fewer than `limit` were counted; False when none are left."""

    def give_back(self, jti: str) -> None:
        """Undo one counted use (the answer it was counted for never left)."""

    def used(self, jti: str) -> int: ...

    def is_revoked(self, jti: str) -> bool: ...

    def revoke(self, jti: str, keep_until: int) -> None: ...

    def record_minted(self, token: MintedToken) -> None: ...

    def minted(self, jti: str) -> MintedToken | None: ...

    def ping(self) -> None:
        """Raise StateUnavailable unless the store answers."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (jti TEXT PRIMARY KEY, used INTEGER NOT NULL,
                                  expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS revoked (jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS minted (jti TEXT PRIMARY KEY, environment TEXT NOT NULL,
                                   key_pattern TEXT NOT NULL, expires_at INTEGER NOT NULL);
"""

_USE_ONE = """
INSERT INTO usage (jti, used, expires_at) VALUES (?, 1, ?)
ON CONFLICT (jti) DO UPDATE SET used = used + 1 WHERE used < ?
"""


def thread_connection(local: threading.local, path: Path) -> sqlite3.Connection:
    """This thread's connection to the shared state file (WAL, autocommit: each statement
    is its own transaction)."""
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(path, timeout=10, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        local.conn = conn
    return conn


class SqliteTokenState:
    """Token state in SQLite (WAL mode); one connection per thread. Revocations are also
    remembered per process and reread only when another process counts a new one (the
    shared counters), so checking a token costs no query."""

    PRUNE_EVERY_SECONDS = 300

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._last_prune = 0.0
        # (revocation counter when read, the revoked jtis then): replaced whole, never mutated
        self._revoked: tuple[int, frozenset[str]] = (-1, frozenset())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _create_private(path)
            conn = self._conn()
            conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError):
            raise StateUnavailable() from None
        self.counters = SharedCounters(counters_path(path))
        self._table = UsageTable(
            table_path(path),
            Overflow(
                self._sql_use_one,
                self._sql_give_back,
                self._sql_used,
                self._sql_holds,
                self._sql_live,
            ),
        )

    def connection(self) -> sqlite3.Connection:
        """This thread's connection to the state file (others may share it)."""
        return thread_connection(self._local, self.path)

    _conn = connection

    def _execute(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        try:
            return self._conn().execute(sql, params)
        except sqlite3.Error:
            self._local.conn = None
            raise StateUnavailable() from None

    def use_one(self, jti: str, limit: int, expires_at: int) -> bool:
        return self._table.use_one(jti, limit, expires_at)

    def give_back(self, jti: str) -> None:
        self._table.give_back(jti)

    def used(self, jti: str) -> int:
        return self._table.used(jti)

    # Counts the shared table has no room for (and those kept before it existed).
    def _sql_use_one(self, jti: str, limit: int, expires_at: int) -> bool:
        self._maybe_prune()
        return self._execute(_USE_ONE, (jti, expires_at, limit)).rowcount == 1

    def _sql_give_back(self, jti: str) -> None:
        self._execute("UPDATE usage SET used = used - 1 WHERE jti = ? AND used > 0", (jti,))

    def _sql_used(self, jti: str) -> int:
        row = self._execute("SELECT used FROM usage WHERE jti = ?", (jti,)).fetchone()
        return row[0] if row else 0

    def _sql_holds(self, jti: str) -> bool:
        return self._execute("SELECT 1 FROM usage WHERE jti = ?", (jti,)).fetchone() is not None

    def _sql_live(self) -> int:
        cutoff = int(time.time()) - RETENTION_SECONDS
        query = "SELECT count(*) FROM usage WHERE expires_at >= ?"
        return int(self._execute(query, (cutoff,)).fetchone()[0])

    def is_revoked(self, jti: str) -> bool:
        seen = self.counters.read(REVOCATIONS)
        known = self._revoked
        if known[0] != seen:  # read the counter first: a revocation counted later rereads
            rows = self._execute("SELECT jti FROM revoked").fetchall()
            known = self._revoked = (seen, frozenset(row[0] for row in rows))
        return jti in known[1]

    def revoke(self, jti: str, keep_until: int) -> None:
        self._execute(
            "INSERT INTO revoked (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) "
            "DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
            (jti, keep_until),
        )
        self.counters.bump(REVOCATIONS)  # stored first, then announced

    def record_minted(self, token: MintedToken) -> None:
        self._maybe_prune()
        self._execute(
            "INSERT OR REPLACE INTO minted (jti, environment, key_pattern, expires_at) "
            "VALUES (?, ?, ?, ?)",
            (token.jti, token.environment, token.key_pattern, token.expires_at),
        )

    def minted(self, jti: str) -> MintedToken | None:
        row = self._execute(
            "SELECT jti, environment, key_pattern, expires_at FROM minted WHERE jti = ?", (jti,)
        ).fetchone()
        return MintedToken(*row) if row else None

    def ping(self) -> None:
        self._execute("SELECT 1 FROM usage LIMIT 1")

    def _maybe_prune(self) -> None:
        now = time.time()
        if now - self._last_prune < self.PRUNE_EVERY_SECONDS:
            return
        self._last_prune = now
        cutoff = int(now) - RETENTION_SECONDS
        for table in ("usage", "revoked", "minted"):
            pruned = self._execute(f"DELETE FROM {table} WHERE expires_at < ?", (cutoff,))  # noqa: S608
            if table == "revoked" and pruned.rowcount:
                self.counters.bump(REVOCATIONS)


def _create_private(path: Path) -> None:
    """Create the state file readable by its owner only (it names every token minted), and
    make one an older version created wider so (SQLite gives its -wal and -shm files the
    database file's mode)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)
        except FileNotFoundError:
            pass
