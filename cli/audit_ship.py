"""Shipping rotated audit files to S3 (SPEC §17), verified first, never the live file.

Each object is `PREFIX/<file name>` with metadata `last-hash` (the hash of its last
record). The chain continues across shipments: the files on disk are verified starting
from the `last-hash` of the newest object already in the bucket (or 64 zeros).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from broker.audit import GENESIS, rotated_files
from broker.audit_verify import ChainBroken, verify_chain


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


def _newest_shipped_hash(s3, dest: Destination, live_name: str) -> str | None:  # type: ignore[no-untyped-def]
    newest = None
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=dest.bucket, Prefix=dest.key(live_name + ".")):
        for obj in page.get("Contents", []):
            if newest is None or obj["Key"] > newest:
                newest = obj["Key"]
    if newest is None:
        return None
    head = s3.head_object(Bucket=dest.bucket, Key=newest)
    return head.get("Metadata", {}).get("last-hash")


def ship(
    s3,  # type: ignore[no-untyped-def]
    live: Path,
    dest: Destination,
    *,
    after: str | None = None,
    delete_after: bool = False,
) -> list[Shipped]:
    """Verify and upload the rotated files of the audit file `live`, oldest first."""
    files: Sequence[Path] = rotated_files(live)
    if not files:
        return []
    start = after or _newest_shipped_hash(s3, dest, live.name) or GENESIS
    try:
        verify_chain(files, start)
    except ChainBroken as exc:
        raise ShipError(f"not shipped: {exc.problem}") from None
    results = []
    for path in files:
        last_hash = verify_chain([path], _first_prev_hash(path)).last_hash
        key = dest.key(path.name)
        uploaded = not _already_there(s3, dest.bucket, key, last_hash)
        if uploaded:
            s3.upload_file(
                str(path), dest.bucket, key, ExtraArgs={"Metadata": {"last-hash": last_hash}}
            )
            if not _already_there(s3, dest.bucket, key, last_hash):
                raise ShipError(f"{path.name}: the upload could not be confirmed")
        if delete_after:
            path.unlink()
        results.append(Shipped(path.name, last_hash, uploaded, delete_after))
    return results


def _first_prev_hash(path: Path) -> str:
    import json

    with path.open("rb") as f:
        return json.loads(f.readline())["prev_hash"]


def _already_there(s3, bucket: str, key: str, last_hash: str) -> bool:  # type: ignore[no-untyped-def]
    from botocore.exceptions import ClientError

    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return head.get("Metadata", {}).get("last-hash") == last_hash
