"""Shipping rotated audit files to S3, verified first, never the live file.

Each object is `PREFIX/<file name>` with metadata `last-hash` (the hash of its last
record). Shipping can run again at any time (an hourly job, with or without
`--delete-after`): the rotated files still on disk are verified as one chain that starts
where the object just before the oldest of them ends (its `last-hash`; 64 zeros when the
bucket holds none before it), a file the bucket already holds with the same `last-hash`
is not uploaded again, and a file the bucket holds with another `last-hash` (one of the
two copies was changed) is an error. Nothing is uploaded unless every check passes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from broker.audit.log import GENESIS, rotated_files
from broker.audit.verify import ChainBroken, verify_chain

LAST_HASH = "last-hash"
TAIL_BLOCK = 64 * 1024


class ShipError(Exception):
    """Nothing (more) was shipped; the message says why in one line."""


@dataclass(frozen=True)
class Destination:
    bucket: str
    prefix: str  # "" or ends with "/"

    @classmethod
    def parse(cls, url: str) -> Destination:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ShipError("--to must look like s3://BUCKET/PREFIX")
        prefix = parsed.path.lstrip("/")
        return cls(parsed.netloc, prefix if not prefix or prefix.endswith("/") else prefix + "/")

    def key(self, name: str) -> str:
        return self.prefix + name


@dataclass(frozen=True)
class Shipped:
    name: str
    last_hash: str
    uploaded: bool  # False: the bucket already held it
    deleted: bool


def ship(
    s3,
    live: Path,
    dest: Destination,
    *,
    after: str | None = None,
    delete_after: bool = False,
) -> list[Shipped]:
    """Verify and upload the rotated files of the audit file `live`, oldest first; skip
    those already shipped. `after`: the hash the chain starts from, instead of the
    bucket's. Raises ShipError, before any upload, when a check fails."""
    files: Sequence[Path] = rotated_files(live)
    if not files:
        return []
    in_bucket = _shipped_names(s3, dest, live.name)
    start = after or _start_of_chain(s3, dest, in_bucket, files[0].name)
    try:
        verify_chain(files, start)
    except ChainBroken as exc:
        raise ShipError(f"not shipped: {exc.problem}") from None
    plan = []  # (path, its last hash, whether the bucket has it)
    last = start
    for path in files:
        last = _last_hash(path) or last
        shipped = path.name in in_bucket
        if shipped:
            theirs = _object_last_hash(s3, dest, path.name)
            if theirs != last:
                raise ShipError(
                    f"not shipped: {path.name}: the bucket's copy ends at last-hash "
                    f"{_short(theirs)}, this file at {_short(last)}: one of them was changed "
                    "(nothing uploaded)"
                )
        plan.append((path, last, shipped))
    results = []
    for path, last_hash, shipped in plan:
        if not shipped:
            key = dest.key(path.name)
            s3.upload_file(
                str(path), dest.bucket, key, ExtraArgs={"Metadata": {LAST_HASH: last_hash}}
            )
            if _object_last_hash(s3, dest, path.name) != last_hash:
                raise ShipError(f"{path.name}: the upload could not be confirmed")
        if delete_after:
            path.unlink()
        results.append(Shipped(path.name, last_hash, not shipped, delete_after))
    return results


def _shipped_names(s3, dest: Destination, live_name: str) -> set[str]:
    """The file names of the objects already under the prefix for this audit file."""
    names: set[str] = set()
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=dest.bucket, Prefix=dest.key(live_name + ".")):
        names.update(obj["Key"][len(dest.prefix) :] for obj in page.get("Contents", []))
    return names


def _start_of_chain(s3, dest: Destination, in_bucket: set[str], first: str) -> str:
    """Where the file named `first` must continue from: the last-hash of the object
    shipped just before it (names sort in chain order), or 64 zeros if there is none."""
    before = [name for name in in_bucket if name < first]
    if not before:
        return GENESIS
    previous = max(before)
    last_hash = _object_last_hash(s3, dest, previous)
    if last_hash is None:
        raise ShipError(f"not shipped: the bucket's {previous} has no {LAST_HASH} metadata")
    return last_hash


def _object_last_hash(s3, dest: Destination, name: str) -> str | None:
    from botocore.exceptions import ClientError

    try:
        head = s3.head_object(Bucket=dest.bucket, Key=dest.key(name))
    except ClientError:
        return None
    return head.get("Metadata", {}).get(LAST_HASH)


def _last_hash(path: Path) -> str | None:
    """The `hash` of a verified file's last record, read from its end (None if empty)."""
    with path.open("rb") as f:
        size = f.seek(0, 2)
        block = TAIL_BLOCK
        while size:
            start = max(0, size - block)
            f.seek(start)
            data = f.read(size - start)
            cut = data.rfind(b"\n", 0, len(data) - 1)
            if cut >= 0 or start == 0:
                return json.loads(data[cut + 1 :])["hash"]
            block *= 2
    return None


def _short(last_hash: str | None) -> str:
    return "(none)" if last_hash is None else last_hash[:16] + "…"
