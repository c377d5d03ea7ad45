"""Verifying the hash-chained audit trail: pure file reading, no broker.

Files are checked in the order given as one chain, lines counted within each file. A
line is intact when it is exactly the canonical JSON of its record (no byte edited), its
`hash` is the SHA-256 of that record without `hash`, and its `prev_hash` is the previous
record's `hash` (64 zeros, or `after`, for the very first record).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from broker.audit.log import GENESIS, canonical, record_hash

HASH_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ChainBreak:
    """The first line that was changed, removed or inserted, and why it is judged so."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: line {self.line}: {self.reason}"


class ChainBroken(Exception):
    def __init__(self, problem: ChainBreak) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass(frozen=True)
class ChainSummary:
    files: int
    records: int
    last_hash: str  # worth keeping elsewhere: cutting the newest records leaves no trace


@dataclass(frozen=True)
class _Link:
    """The last record seen: its hash, where it is, and the hash it chained to."""

    hash: str
    prev_hash: str | None = None
    file: str | None = None
    line: int = 0


def is_hash(text: object) -> bool:
    return isinstance(text, str) and HASH_RE.fullmatch(text) is not None


def verify_chain(files: Sequence[Path | str], after: str = GENESIS) -> ChainSummary:
    """Check `files` as one chain that starts at `after`.

    Raises ChainBroken naming the first bad line, ValueError for a malformed `after`;
    OSError propagates when a file cannot be read.
    """
    if not is_hash(after):
        raise ValueError("after must be 64 lowercase hex digits")
    last = _Link(after)
    records = 0
    for path in files:
        name = str(path)
        for number, line, whole in _lines(Path(path)):
            record = _whole_record(line, whole)
            if isinstance(record, str):
                raise ChainBroken(ChainBreak(name, number, record))
            if record["prev_hash"] != last.hash:
                raise ChainBroken(_link_break(record, last, name, number))
            last = _Link(record["hash"], record["prev_hash"], name, number)
            records += 1
    return ChainSummary(len(files), records, last.hash)


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line without its newline, whether the newline was there)."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            whole = raw.endswith(b"\n")
            yield number, raw[:-1] if whole else raw, whole


def _whole_record(line: bytes, whole: bool) -> dict[str, Any] | str:
    """The record a line holds if the line is intact on its own, else the reason not."""
    if not whole:
        return "unfinished last line (no newline): a writer was interrupted or the file was cut"
    if not line.strip():
        return "empty line: a line was inserted"
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return "not valid UTF-8: the line was changed"
    except ValueError:
        return "not valid JSON: the line was changed"
    if not isinstance(record, dict):
        return "not a JSON object: the line was changed"
    for field in ("prev_hash", "hash"):
        if not is_hash(record.get(field)):
            return f"no {field} of 64 lowercase hex digits: the line was changed"
    try:
        if record_hash(record) != record["hash"]:
            return "hash does not match the record: the line was changed"
        if canonical(record) != line:
            return "not in canonical JSON form: the line was edited"
    except orjson.JSONEncodeError:  # e.g. an integer past 64 bits: no broker wrote it
        return "not in canonical JSON form: the line was edited"
    return record


def _link_break(record: dict[str, Any], last: _Link, name: str, number: int) -> ChainBreak:
    """Why `record` (at name:number) does not chain to `last`, pinned on the guilty line."""
    if last.file is None:
        start = "64 zeros" if last.hash == GENESIS else "the --after hash"
        return ChainBreak(name, number, f"prev_hash is not the start of the chain ({start})")
    if record["hash"] == last.hash:
        return ChainBreak(name, number, f"a repeat of the record at {last.file} line {last.line}")
    if record["prev_hash"] == last.prev_hash:
        # This record chains past the previous line: that line is the one inserted.
        return ChainBreak(last.file, last.line, "inserted: the next record chains past it")
    if last.file != name:
        return ChainBreak(
            name,
            number,
            f"prev_hash does not match the last record of {last.file}: a file is missing "
            "or out of order, or records were removed",
        )
    return ChainBreak(
        name,
        number,
        f"prev_hash does not match line {last.line}: a record was removed before this "
        f"line, or line {last.line} was rewritten",
    )
