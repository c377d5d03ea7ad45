"""Counters that worker processes share through a small memory-mapped file.

A worker that changes a rarely changing shared fact (a token revoked, an address
throttled) bumps its counter after the change is stored; every worker compares the
counter with the one it last saw before trusting what it remembers, and rereads the
store only when they differ. Reading a counter costs no system call, so a check that
would otherwise query SQLite on every request costs a memory read.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from pathlib import Path

from broker.errors import StateUnavailable

REVOCATIONS = 0
THROTTLES = 1
_SLOTS = 2
_U64 = struct.Struct("<Q")


class SharedCounters:
    """`_SLOTS` 64-bit counters in `path` (created 0600), mapped into this process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size < _SLOTS * 8:
                    with _locked(fd):
                        if os.fstat(fd).st_size < _SLOTS * 8:
                            os.ftruncate(fd, _SLOTS * 8)
                self._map = mmap.mmap(fd, _SLOTS * 8)
            finally:
                os.close(fd)  # the mapping stays valid
        except OSError:
            raise StateUnavailable() from None

    def read(self, slot: int) -> int:
        return _U64.unpack_from(self._map, slot * 8)[0]

    def bump(self, slot: int) -> None:
        """Add one, under a lock on the file (bumps are rare; reads take no lock)."""
        try:
            fd = os.open(self.path, os.O_RDWR)
            try:
                with _locked(fd):
                    _U64.pack_into(self._map, slot * 8, (self.read(slot) + 1) % 2**64)
            finally:
                os.close(fd)
        except OSError:
            raise StateUnavailable() from None


class _locked:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


def counters_path(state_db: Path) -> Path:
    """The counters' file beside the SQLite state file (as SQLite's own -wal and -shm)."""
    return state_db.with_name(state_db.name + "-epochs")
