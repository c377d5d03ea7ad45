"""Reading the secrets `--env-file` templates refer to, before anything runs:
one batch per environment for the unversioned references, one read for each `?version=`
reference. Every failure names the reference(s) it concerns, never a value.

Optional and default references fall back only when the key does not exist, as the
broker tells it:

- unversioned references: a keys batch naming a missing key is 404 for the whole batch
  (and so is one for a missing environment). Only then are the key names listed (no use
  of a limited token; a 404 there means the environment does not exist, an error), and the
  keys that exist are read in a second batch. The batch's scope check comes before its
  404, so a key outside the reader's pattern is 403, never taken for missing. A failed
  batch uses no use: a minted reader needs one use for the batch either way.
- `?version=` references: the 404 says whether the version, the environment at that
  version or the key is missing; only the broker's "key ... not found" falls back.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cli.client import (
    BadRequest,
    Batch,
    Forbidden,
    NotFound,
    PermissionDenied,
    Value,
    VaultClient,
    VaultError,
)
from cli.run.template import SecretRef


@dataclass(frozen=True)
class EnvironmentReads:
    """What to read from one environment: a batch of keys, and each versioned reference."""

    environment: str
    keys: tuple[str, ...]  # the unversioned references' keys, read in one batch
    versioned: tuple[SecretRef, ...]  # read one request each
    refs: tuple[SecretRef, ...]  # all references to this environment, for messages

    @property
    def batched(self) -> tuple[SecretRef, ...]:
        """The unversioned references, whose keys are read in one batch."""
        return tuple(ref for ref in self.refs if ref.version is None)

    @property
    def requests(self) -> int:
        """How many counted reads this takes when every key exists (a reader minted for
        it needs that many uses; a key that falls back takes fewer)."""
        return (1 if self.keys else 0) + len(self.versioned)

    @property
    def key_pattern(self) -> str:
        """The narrowest single glob covering every key referenced here."""
        return narrowest_glob(ref.key for ref in self.refs)


def narrowest_glob(keys: Iterable[str]) -> str:
    """The key itself for one key, else the keys' longest common prefix followed by `*`."""
    distinct = sorted(set(keys))
    if len(distinct) == 1:
        return distinct[0]
    return os.path.commonprefix(distinct) + "*"


def plan_reads(refs: Iterable[SecretRef]) -> tuple[EnvironmentReads, ...]:
    """The reads the references need, one entry per environment (sorted by name)."""
    by_environment: dict[str, list[SecretRef]] = {}
    for ref in dict.fromkeys(refs):
        by_environment.setdefault(ref.environment, []).append(ref)
    return tuple(
        EnvironmentReads(
            environment=environment,
            keys=tuple(sorted({r.key for r in refs if r.version is None})),
            versioned=tuple(r for r in refs if r.version is not None),
            refs=tuple(refs),
        )
        for environment, refs in sorted(by_environment.items())
    )


class ReferenceFailed(Exception):
    """A reference could not be read; the message names it (and says why)."""

    def __init__(self, refs: Sequence[SecretRef], error: VaultError, note: str = "") -> None:
        names = ", ".join(str(ref) for ref in refs)
        super().__init__(f"{names}: {error}" + (f" ({note})" if note else ""))
        self.refs = tuple(refs)
        self.error = error


REFERENCE_ERRORS = (NotFound, Forbidden, BadRequest)  # about the reference, not the broker


@dataclass(frozen=True)
class EnvironmentValues:
    """What one environment's reads gave."""

    values: dict[SecretRef, Value] = field(repr=False)  # every reference but those fell back
    counted: int  # reads answered 200: each used one of a limited reader's uses


def read_references(reader: VaultClient, reads: EnvironmentReads) -> EnvironmentValues:
    """The value of every reference to `reads.environment`, less the optional and default
    ones whose key does not exist.

    Raises ReferenceFailed (naming the references concerned) when one is missing and
    required, when the environment is missing, or when one is out of the reader's scope or
    malformed for the broker; VaultError for anything else."""
    values: dict[SecretRef, Value] = {}
    counted = 0
    if reads.keys:
        batch = _read_batch(reader, reads)
        if batch is not None:
            counted += 1
            values.update({r: batch.values[r.key] for r in reads.batched if r.key in batch.values})
    for ref in reads.versioned:
        try:
            values[ref] = reader.get(ref.environment, ref.key, version=ref.version).value
            counted += 1
        except NotFound as exc:
            if ref.required or exc.message != _key_not_found(ref.key):
                raise ReferenceFailed((ref,), exc) from None
        except REFERENCE_ERRORS as exc:
            raise ReferenceFailed((ref,), exc) from None
    return EnvironmentValues(values, counted)


def _key_not_found(key: str) -> str:
    """The broker's 404 message for a key missing from an environment that exists."""
    return f"key {key!r} not found"


def _read_batch(reader: VaultClient, reads: EnvironmentReads) -> Batch | None:
    """The batch of every unversioned key; if one does not exist (404), the batch of those
    that do, or None when none does."""
    batched = reads.batched
    try:
        return reader.read_batch(reads.environment, keys=list(reads.keys))
    except NotFound as exc:
        missing = exc
    except REFERENCE_ERRORS as exc:
        raise ReferenceFailed(_unreadable(reader, reads), exc) from None
    existing = _existing_keys(reader, reads, missing)
    absent = [ref for ref in batched if ref.required and ref.key not in existing]
    if absent:
        raise ReferenceFailed(absent, missing)
    keys = [key for key in reads.keys if key in existing]
    if not keys:
        return None
    try:
        return reader.read_batch(reads.environment, keys=keys)
    except REFERENCE_ERRORS as exc:  # a new commit in between
        raise ReferenceFailed(batched, exc) from None


def _existing_keys(reader: VaultClient, reads: EnvironmentReads, missing: NotFound) -> set[str]:
    """After a batch's 404: which of its keys exist (a list uses no use). Raises
    ReferenceFailed when the environment does not exist, or when the reader cannot list
    (it then cannot tell which reference is missing)."""
    batched = reads.batched
    pattern = narrowest_glob(reads.keys)
    try:
        return set(reader.list_keys(reads.environment, pattern).keys)
    except NotFound as exc:  # the list's only 404: no such environment
        raise ReferenceFailed(batched, exc) from None
    except VaultError as exc:
        if all(ref.required for ref in batched):
            raise ReferenceFailed(batched, missing) from None  # which one: the 404 says
        if isinstance(exc, PermissionDenied):
            note = "telling a missing key from a missing environment takes a reader with "
            raise ReferenceFailed(batched, missing, note + "secrets:list") from None
        raise ReferenceFailed(batched, exc) from None


def _unreadable(reader: VaultClient, reads: EnvironmentReads) -> tuple[SecretRef, ...]:
    """After a refused batch: the unversioned references the reader cannot see (listing
    names costs no use), or all of them when it cannot list either."""
    batched = reads.batched
    try:
        visible = set(reader.list_keys(reads.environment).keys)
    except VaultError:
        return batched
    return tuple(ref for ref in batched if ref.key not in visible) or batched
