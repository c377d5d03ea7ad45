"""The audit trail: one hash-chained JSON line per API request, appended whole.

`hash` is the hex SHA-256 of the record without `hash` in canonical JSON (sorted keys,
no spaces, UTF-8); `prev_hash` is the previous record's `hash` (64 zeros first). Worker
processes share the file: an exclusive flock around "read the chain's tail, append one
line" keeps records whole and the chain unbroken.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from broker.errors import AuditUnavailable

GENESIS = "0" * 64
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
_TAIL_BLOCK = 65536
_HASH_RE = re.compile(r"[0-9a-f]{64}")
_ROTATED_RE = re.compile(r"\d{8}T\d{6}\.\d{3}Z(-\d{4})?")


def canonical(record: dict[str, Any]) -> bytes:
    """Sorted keys, no spaces, UTF-8: byte for byte what
    `json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` gives
    for the values a record holds (strings, integers, booleans, null, lists, objects; no
    floats), made by orjson in a tenth of the time. orjson.JSONEncodeError (a TypeError)
    for what it cannot encode, such as a lone surrogate."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def record_hash(record: dict[str, Any]) -> str:
    """The hash of a record: SHA-256 of its canonical JSON without the `hash` field."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def _hash_of(line: bytes) -> str:
    """The `hash` of a record line; ValueError if the line is not a chained record (a
    damaged tail is refused, not chained onto)."""
    record = orjson.loads(line)
    value = record.get("hash") if isinstance(record, dict) else None
    if not (isinstance(value, str) and _HASH_RE.fullmatch(value)):
        raise ValueError("the audit file's last record carries no hash")
    return value


def rotated_files(live: Path) -> list[Path]:
    """The files rotated away from the audit file `live`, oldest first: their names,
    `<name>.<YYYYMMDDTHHMMSS.mmmZ>[-NNNN]`, sort in chain order."""
    prefix = live.name + "."
    return sorted(
        p for p in live.parent.glob(prefix + "*") if _ROTATED_RE.fullmatch(p.name[len(prefix) :])
    )


_QUICK_TAIL = 4096


def _quick_tail_hash(fd: int, size: int) -> str | None:
    """The last record's hash from one pread of the file's end, when that block holds a
    whole last line; None sends the caller down the careful path."""
    if size == 0:
        return None
    start = max(0, size - _QUICK_TAIL)
    block = os.pread(fd, size - start, start)
    if not block.endswith(b"\n"):
        return None  # a partial line to drop first
    cut = block.rfind(b"\n", 0, len(block) - 1)
    if cut < 0 and start > 0:
        return None  # the last line is longer than the block
    return _hash_of(block[cut + 1 : -1])


_second_cache: tuple[int, str] = (-1, "")


def now_rfc3339_ms() -> str:
    global _second_cache
    now = time.time()
    second = int(now)
    if _second_cache[0] != second:  # strftime once a second, not once a record
        _second_cache = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second_cache[1]}.{int((now - second) * 1000):03d}Z"


_pid = os.getpid()


def _note_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_note_fork)


def _current_pid() -> int:
    """This process's id without a system call per record (updated in a forked child)."""
    return _pid


class AuditLog:
    """Appends chained records to one JSONL file, safely across threads and processes."""

    def __init__(self, path: Path, fsync: bool = False, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = path
        self.fsync = fsync
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0
        self._file_id: tuple[int, int] = (0, 0)  # (device, inode) of the open file
        self._size = 0  # the file's size, read under the lock
        self._tail: tuple[int, str] | None = None  # (file size, last hash) when we last wrote
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked() as fd:
                self._drop_partial_line(fd, os.fstat(fd).st_size)
        except OSError:
            raise AuditUnavailable() from None

    def __del__(self) -> None:
        if self._fd is not None and self._pid == _current_pid():
            with contextlib.suppress(OSError):
                os.close(self._fd)

    def _open(self, fresh: bool = False) -> int:
        """This process's descriptor of the audit file: opened once, again after a fork,
        and again when `fresh` (the path names another file now: rotated, moved or
        removed by an operator), so no record goes to an unlinked inode."""
        if self._fd is not None and self._pid == _current_pid() and not fresh:
            return self._fd
        if self._fd is not None:
            os.close(self._fd)  # after a fork, the child's copy: the parent keeps its own
        self._fd = None
        # Read-write so the chain's tail can be read through the same descriptor.
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self._pid = _current_pid()
        st = os.fstat(self._fd)
        self._file_id = (st.st_dev, st.st_ino)
        self._tail = None
        return self._fd

    class _Flock:
        """The thread lock, then an exclusive flock on the file the path names now (a
        lock taken on a file that was rotated away meanwhile is dropped and retaken)."""

        def __init__(self, log: AuditLog) -> None:
            self.log = log

        def __enter__(self) -> int:
            log = self.log
            log._lock.acquire()
            try:
                fresh = False
                while True:
                    fd = log._open(fresh)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    # One stat under the lock says both that the path still names this
                    # file and its size (every writer changes it only under this lock).
                    try:
                        st = os.stat(log.path)
                    except FileNotFoundError:
                        st = None
                    if st is not None and (st.st_dev, st.st_ino) == log._file_id:
                        log._size = st.st_size
                        return fd
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    fresh = True
            except OSError:
                log._lock.release()
                raise

        def __exit__(self, *exc: object) -> None:
            try:
                if self.log._fd is not None:
                    fcntl.flock(self.log._fd, fcntl.LOCK_UN)
            finally:
                self.log._lock.release()

    def _locked(self) -> AuditLog._Flock:
        return AuditLog._Flock(self)

    def _drop_partial_line(self, fd: int, size: int) -> int:
        """Cut a trailing line that a killed writer left unfinished; return the new size."""
        if size == 0:
            return 0
        with open(self.path, "rb") as f:
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return size
            start = max(0, size - _TAIL_BLOCK)
            while True:
                f.seek(start)
                block = f.read(size - start)
                cut = block.rfind(b"\n")
                if cut >= 0:
                    new_size = start + cut + 1
                    break
                if start == 0:
                    new_size = 0
                    break
                start = max(0, start - _TAIL_BLOCK)
        os.ftruncate(fd, new_size)
        return new_size

    def _last_hash(self, size: int, path: Path | None = None) -> str:
        if size == 0:
            return self._previous_file_hash() if path is None else GENESIS
        with open(path or self.path, "rb") as f:
            start = max(0, size - _TAIL_BLOCK)
            while True:
                f.seek(start)
                block = f.read(size - start)
                lines = block.rstrip(b"\n").rsplit(b"\n", 1)
                if len(lines) == 2 or start == 0:
                    return _hash_of(lines[-1])
                start = max(0, start - _TAIL_BLOCK)

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Chain and append one record before returning it; raise AuditUnavailable if the
        line could not be handed to the operating system whole. `ts` is the time of the
        append unless the record brings its own."""
        try:
            with self._locked() as fd:
                size = self._size
                if self._tail is not None and self._tail[0] == size:
                    prev = self._tail[1]
                elif (quick := _quick_tail_hash(fd, size)) is not None:
                    prev = quick  # another worker wrote last: one pread, no reopen
                else:
                    size = self._drop_partial_line(fd, size)
                    prev = self._last_hash(size)
                # Stamped under the lock, so times rise along the chain and a rotated
                # file's name (its first record's time) sorts in chain order.
                chained = {"ts": now_rfc3339_ms(), **record, "prev_hash": prev}
                chained["hash"] = hashlib.sha256(canonical(chained)).hexdigest()
                line = canonical(chained) + b"\n"
                try:
                    written = os.write(fd, line)
                    if written != len(line):
                        raise OSError("short write")
                    if self.fsync:
                        os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, size)
                    self._tail = None
                    raise
                self._tail = (size + len(line), chained["hash"])
                if size + len(line) > self.max_bytes:
                    self._rotate()
                return chained
        except (OSError, ValueError, KeyError, orjson.JSONEncodeError):
            self._tail = None
            raise AuditUnavailable() from None

    def rotated_files(self) -> list[Path]:
        """Rotated files still on disk, oldest first (their names sort in chain order)."""
        return rotated_files(self.path)

    @property
    def _carry_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.chain")

    def _previous_file_hash(self) -> str:
        """Where a new file's chain starts: the last hash of the file rotated before it, as
        noted at rotation (rotated files may have been shipped and deleted since)."""
        try:
            carried = self._carry_path.read_text().strip()
        except FileNotFoundError:
            carried = ""
        if _HASH_RE.fullmatch(carried):
            return carried
        rotated = self.rotated_files()
        if not rotated:
            return GENESIS
        last = rotated[-1]
        return self._last_hash(last.stat().st_size, last)

    def _rotate(self) -> None:
        """Rename the full file after its first record's time (held lock: no writer races)."""
        with open(self.path, "rb") as f:
            first = json.loads(f.readline())
        stamp = (
            datetime.strptime(first["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").strftime("%Y%m%dT%H%M%S.%f")[
                :-3
            ]
            + "Z"
        )
        target = self.path.with_name(f"{self.path.name}.{stamp}")
        n = 0
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.{stamp}-{n:04d}")
        assert self._tail is not None
        carry = self._carry_path.with_suffix(".tmp")
        carry.write_text(self._tail[1] + "\n")
        os.replace(carry, self._carry_path)
        os.rename(self.path, target)
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))  # the live file goes on
        self._tail = None

    def check(self) -> bool:
        """True when the audit file can be opened for appending."""
        try:
            with self._locked():
                return True
        except OSError:
            return False
