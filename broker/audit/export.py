"""Reading the audit trail back out: which files, which records, streamed.

The trail is the live file plus the rotated files still beside it
(`<name>.<YYYYMMDDTHHMMSS.mmmZ>[-NNNN]`), oldest first. An export is a
snapshot taken when it is asked for: every file is opened and its length noted at once,
so a record appended (or a file rotated) while the answer streams is not half-read, and
the export's own audit record is not part of it.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import orjson

from broker.errors import BadRequest, ScopeDenied
from broker.scope import ALL, check_environment

OUTCOMES = ("success", "denied", "error")
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)
_CHUNK = 1 << 16


@dataclass(frozen=True)
class AuditQuery:
    """Which records an export gives; None means no filter on that field."""

    environment: str | None
    subject: str | None
    outcome: str | None
    since: datetime | None  # inclusive
    until: datetime | None  # exclusive

    @classmethod
    def from_args(cls, args: Mapping[str, list[str]], token_environment: str) -> AuditQuery:
        """Parse the query string (each name to its values); an empty value is no filter.

        A token of one environment only ever sees that environment's records. Raises
        BadRequest naming the parameter, ScopeDenied for another environment.
        """
        environment = _one(args, "environment")
        if environment is not None:
            check_environment(environment)
        if token_environment != ALL:
            if environment not in (None, token_environment):
                raise ScopeDenied("the environment is outside the token's scope")
            environment = token_environment
        subject = _one(args, "subject")
        if subject is not None and not (len(subject) <= 128 and subject.isprintable()):
            raise BadRequest("subject must be 1-128 printable characters")
        outcome = _one(args, "outcome")
        if outcome is not None and outcome not in OUTCOMES:
            raise BadRequest(f"outcome must be one of {', '.join(OUTCOMES)}")
        return cls(
            environment,
            subject,
            outcome,
            _instant(_one(args, "since"), "since"),
            _instant(_one(args, "until"), "until"),
        )

    def matches(self, record: object) -> bool:
        if not isinstance(record, dict):
            return False
        for field, wanted in (
            ("environment", self.environment),
            ("subject", self.subject),
            ("outcome", self.outcome),
        ):
            if wanted is not None and record.get(field) != wanted:
                return False
        if self.since is None and self.until is None:
            return True
        at = _record_time(record.get("ts"))
        if at is None:
            return False
        return (self.since is None or at >= self.since) and (self.until is None or at < self.until)


def _one(args: Mapping[str, list[str]], name: str) -> str | None:
    values = args.get(name) or []
    if len(values) > 1:
        raise BadRequest(f"{name} may be given once")
    return values[0] if values and values[0] != "" else None


def parse_rfc3339(text: str) -> datetime | None:
    """An RFC 3339 date-time with an offset (`Z` or `±hh:mm`), or None."""
    found = _RFC3339.fullmatch(text)
    if found is None:
        return None
    day, clock, fraction, offset = found.groups()
    fraction = f".{(fraction or '0')[:6]}"
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(f"{day}T{clock}{fraction}{offset}")
    except ValueError:
        return None


def _instant(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    at = parse_rfc3339(text)
    if at is None:
        raise BadRequest(f"{name} must be an RFC 3339 date-time such as 2026-01-01T00:00:00Z")
    return at


def _record_time(ts: object) -> datetime | None:
    return parse_rfc3339(ts) if isinstance(ts, str) else None


# -- the files of the trail ------------------------------------------------------------


@dataclass
class _Slice:
    """An open file and how much of it belongs to the snapshot."""

    file: BinaryIO
    length: int


class TrailSnapshot:
    """The audit trail as it stands now: rotated files then the live one, each cut at its
    length when opened. Close it (or exhaust `records`) to release the files."""

    def __init__(self, live: Path, list_rotated: Callable[[], list[Path]]) -> None:
        """`list_rotated` names the rotated files still on disk, oldest first."""
        self._slices: list[_Slice] = []
        try:
            # The live file first: if it is rotated while the others are listed, its old
            # inode shows up among them and is recognised as already open.
            live_slice = self._open_live(live)
            seen = {os.fstat(live_slice.file.fileno()).st_ino} if live_slice else set()
            for path in list_rotated():
                try:
                    f = path.open("rb")
                except OSError:
                    continue
                info = os.fstat(f.fileno())
                if info.st_ino in seen:
                    f.close()
                    continue
                seen.add(info.st_ino)
                self._slices.append(_Slice(f, info.st_size))
            if live_slice is not None:
                self._slices.append(live_slice)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _open_live(live: Path) -> _Slice | None:
        try:
            f = live.open("rb")
        except FileNotFoundError:
            return None
        # Writers hold an exclusive flock while appending: a shared one sees whole lines.
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        try:
            length = os.fstat(f.fileno()).st_size
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return _Slice(f, length)

    def close(self) -> None:
        for piece in self._slices:
            piece.file.close()
        self._slices = []

    def lines(self) -> Iterator[bytes]:
        """Every whole line (without its newline) of the snapshot, oldest first."""
        try:
            for piece in self._slices:
                yield from _whole_lines(piece.file, piece.length)
        finally:
            self.close()

    def export(self, query: AuditQuery) -> Iterator[bytes]:
        """The matching records as JSONL, each line exactly as the trail holds it."""
        batch: list[bytes] = []
        size = 0
        for line in self.lines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a damaged line is `vanta-cli audit verify`'s business
            if query.matches(record):
                batch.append(line + b"\n")
                size += len(line) + 1
                if size >= _CHUNK:
                    yield b"".join(batch)
                    batch, size = [], 0
        if batch:
            yield b"".join(batch)


def _whole_lines(f: BinaryIO, length: int) -> Iterator[bytes]:
    remaining = length
    pending = b""
    while remaining > 0:
        chunk = f.read(min(_CHUNK, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
        *lines, pending = (pending + chunk).split(b"\n")
        yield from (line for line in lines if line)
    # What is left has no newline: a writer was killed mid-line, and it is no record.
