"""Usage counts of limited tokens in a memory-mapped table that every worker of one
broker shares.

"Use one if any are left" must be exact across processes. In SQLite it is one statement,
but a write transaction: 15-20 us of CPU, and when two workers write at once the second
sleeps in SQLite's busy handler. Here it is a lookup in an open-addressing table under a
thread lock and an flock: a few microseconds, and a waiting worker wakes as soon as the
other is done. The file outlives the processes (the kernel writes the shared pages back),
so counts survive a restart as SQLite's do with synchronous=NORMAL.

Layout: a header (magic, slot count, how many tokens went to SQLite), then slots of 32
bytes: 16 bytes of BLAKE2b(jti) (all zero: never used), the count and the token's expiry
(Unix seconds). A slot is never emptied, only taken over once its token has been expired
for RETENTION_SECONDS, so a probe may stop at the first never-used slot. A token that
finds no slot within MAX_PROBES is counted in SQLite instead (`overflow`); while any
token ever was, a token the table does not hold is looked for there too.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from broker.errors import StateUnavailable

MAGIC = b"VANTAUT1"
SLOTS = 1 << 18  # 8 MiB of slots, allocated by the file system as they are touched
MAX_PROBES = 64
RETENTION_SECONDS = 3600  # as the SQLite state: a count outlives its token by an hour
_HEADER = struct.Struct("<8sQQ")  # magic, slots, tokens counted in SQLite
_HEADER_BYTES = 32
_SLOT = struct.Struct("<16sQQ")  # key digest, used, expires_at
_EMPTY = bytes(16)


class Overflow:
    """Where a token the table has no room for is counted (the SQLite state)."""

    def __init__(
        self,
        use_one: Callable[[str, int, int], bool],
        give_back: Callable[[str], None],
        used: Callable[[str], int],
        holds: Callable[[str], bool],
        live: Callable[[], int],
    ) -> None:
        self.use_one, self.give_back, self.used, self.holds = use_one, give_back, used, holds
        self.live = live  # how many tokens it counts now


class UsageTable:
    def __init__(
        self,
        path: Path,
        overflow: Overflow,
        clock: Callable[[], float] = time.time,
        slots: int = SLOTS,
    ) -> None:
        self.path = path
        self.overflow = overflow
        self.clock = clock
        self.slots = slots
        self._lock = threading.Lock()
        self._pid = -1
        self._fd = -1
        try:
            self._open()
        except OSError:
            raise StateUnavailable() from None

    def _open(self) -> None:
        """Map the table in this process (again after a fork: an flock is held by an open
        file, which a forked child would share with its parent)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = _HEADER_BYTES + self.slots * _SLOT.size
            fresh = os.fstat(fd).st_size == 0
            if fresh:
                os.ftruncate(fd, size)
            table = mmap.mmap(fd, size)
            if fresh:
                # Counts a broker kept in SQLite before this table existed stay there.
                _HEADER.pack_into(table, 0, MAGIC, self.slots, self.overflow.live())
            magic, slots, _ = _HEADER.unpack_from(table, 0)
            if magic != MAGIC or slots != self.slots:
                raise OSError("not a usage table")
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(fd)
            raise
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd, self._map, self._pid = fd, table, os.getpid()

    def _enter(self) -> None:
        self._lock.acquire()
        try:
            if self._pid != os.getpid():
                self._open()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError:
            self._lock.release()
            raise StateUnavailable() from None

    def _exit(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def _find(self, digest: bytes, now: int) -> tuple[int, bool]:
        """(offset of the token's slot, True) or (offset of a slot it may take, False);
        offset -1 when neither lies within MAX_PROBES."""
        table = self._map
        slots = self.slots
        start = int.from_bytes(digest[8:], "little") % slots
        free = -1
        for probe in range(min(MAX_PROBES, slots)):
            offset = _HEADER_BYTES + ((start + probe) % slots) * _SLOT.size
            key, _, expires_at = _SLOT.unpack_from(table, offset)
            if key == digest:
                return offset, True
            if key == _EMPTY:
                return (offset if free < 0 else free), False
            if free < 0 and expires_at + RETENTION_SECONDS < now:
                free = offset  # a long-expired token's slot: taken over below
        return free, False

    def _overflowed(self) -> bool:
        return _HEADER.unpack_from(self._map, 0)[2] > 0

    def use_one(self, jti: str, limit: int, expires_at: int) -> bool:
        digest = _digest(jti)
        self._enter()
        try:
            offset, found = self._find(digest, int(self.clock()))
            if found:
                _, used, _ = _SLOT.unpack_from(self._map, offset)
                if used >= limit:
                    return False
                _SLOT.pack_into(self._map, offset, digest, used + 1, expires_at)
                return True
            if self._overflowed() and self.overflow.holds(jti):
                return self.overflow.use_one(jti, limit, expires_at)
            if offset < 0:  # no room near its place: SQLite counts it from now on
                magic, slots, spilled = _HEADER.unpack_from(self._map, 0)
                _HEADER.pack_into(self._map, 0, magic, slots, spilled + 1)
                return self.overflow.use_one(jti, limit, expires_at)
            _SLOT.pack_into(self._map, offset, digest, 1, expires_at)
            return True
        finally:
            self._exit()

    def give_back(self, jti: str) -> None:
        digest = _digest(jti)
        self._enter()
        try:
            offset, found = self._find(digest, int(self.clock()))
            if found:
                _, used, expires_at = _SLOT.unpack_from(self._map, offset)
                _SLOT.pack_into(self._map, offset, digest, max(0, used - 1), expires_at)
            elif self._overflowed():
                self.overflow.give_back(jti)
        finally:
            self._exit()

    def used(self, jti: str) -> int:
        digest = _digest(jti)
        self._enter()
        try:
            offset, found = self._find(digest, int(self.clock()))
            if found:
                return _SLOT.unpack_from(self._map, offset)[1]
            return self.overflow.used(jti) if self._overflowed() else 0
        finally:
            self._exit()


def _digest(jti: str) -> bytes:
    digest = hashlib.blake2b(jti.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return digest if digest != _EMPTY else b"\x01" + digest[1:]


def table_path(state_db: Path) -> Path:
    """The table's file beside the SQLite state file (as SQLite's own -wal and -shm)."""
    return state_db.with_name(state_db.name + "-usage")
