"""The audit explorer's reader: filtered records, newest first, one page at a time.

Filtering is `broker.audit.export.AuditQuery`'s (the export's rules, the token's
environment included). Reading is backwards: the live file, then the rotated files still
on disk, newest first, block by block, stopping once the page is full, so the first pages
of a large trail cost little.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from broker.errors import BadRequest

PAGE_SIZE = 50
MAX_PAGE = 10_000
_BLOCK = 65536
# What a browser's <input type="datetime-local"> or "date" sends: read as UTC.
_LOCAL_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[Tt ](\d{2}:\d{2})(:\d{2})?)?")


@dataclass(frozen=True)
class AuditPage:
    records: list[dict[str, Any]]
    page: int
    has_more: bool


def as_rfc3339(raw: str) -> str:
    """A form's date or date-time without offset, as RFC 3339 UTC; other text unchanged
    (the export's parser then judges it)."""
    found = _LOCAL_TIME.fullmatch(raw.strip())
    if found is None:
        return raw.strip()
    day, clock, seconds = found.groups()
    return f"{day}T{clock or '00:00'}{seconds or ':00'}Z"


def lines_backwards(path: Path) -> Iterator[bytes]:
    """The file's whole lines, last first. A missing file has none; a trailing line without
    its newline is a record still being written (or torn), and is left out."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except (FileNotFoundError, NotADirectoryError):
        return
    with handle:
        position = _end_of_last_line(handle, os.fstat(handle.fileno()).st_size)
        rest = b""
        while position > 0:
            start = max(0, position - _BLOCK)
            handle.seek(start)
            lines = (handle.read(position - start) + rest).split(b"\n")
            rest = lines.pop(0) if start > 0 else b""  # may begin in the block before
            position = start
            for line in reversed(lines):
                if line:
                    yield line


def _end_of_last_line(handle: BinaryIO, size: int) -> int:
    """The offset just past the file's last newline (0 when it has none)."""
    position = size
    while position > 0:
        start = max(0, position - _BLOCK)
        handle.seek(start)
        cut = handle.read(position - start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        position = start
    return 0


def records_newest_first(files_newest_first: Sequence[Path]) -> Iterator[dict[str, Any]]:
    for path in files_newest_first:
        for line in lines_backwards(path):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a damaged line is `vanta-cli audit verify`'s business
            if isinstance(record, dict):
                yield record


def read_page(
    files_newest_first: Sequence[Path],
    matches: Callable[[dict[str, Any]], bool],
    page: int,
    size: int = PAGE_SIZE,
) -> AuditPage:
    """Page `page` (from 1) of the records `matches` accepts, newest first."""
    skip = (page - 1) * size
    found: list[dict[str, Any]] = []
    for record in records_newest_first(files_newest_first):
        if not matches(record):
            continue
        if skip:
            skip -= 1
            continue
        if len(found) == size:
            return AuditPage(found, page, has_more=True)
        found.append(record)
    return AuditPage(found, page, has_more=False)


def parse_page(raw: str | None) -> int:
    if raw is None or raw == "":
        return 1
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise BadRequest(f"page must be a whole number from 1 to {MAX_PAGE}")
    return int(raw)
