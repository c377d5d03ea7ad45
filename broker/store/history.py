"""Key history from Git by comparing ciphertext: nothing here ever decrypts.

SOPS re-encrypts an unchanged value to the same `ENC[...]` string (it reuses the IV of a
plaintext it decrypted), and a changed value to a new one (a fresh random IV). So a key
changed in a commit exactly when its ciphertext there differs from its ciphertext in
the parent: history needs the file's blobs and a YAML parse, never a key.

One `git log --raw` lists every commit that touched the file with the blob ids before and
after; each blob is read (one `git cat-file --batch` for all that are new) and parsed once
into its ciphertext leaves. Blobs never change, nor does the log of a commit, so both are
cached by id, bounded, and a repeated question costs dictionary lookups.

A version of the file that is not served (YAML anchors or aliases, or too large)
is never parsed: history skips it and says so (`skipped_versions`), and the commit after it
is compared with the versions before it. When the version at the asked-for commit is such a
file, there is nothing to show: FileRefused (503 decrypt_failed, like a read).

Merges follow Git's own rule, applied per key: `git log`'s default history simplification
walks a merge's side branch only when the merge's file differs from every parent, and a
merge is listed for a key only when the key's ciphertext in it matches none of its parents'
(a conflict resolved by hand). Otherwise the change is listed at the commit that made it,
on the branch it came from, with its own author and message.
"""

from __future__ import annotations

import re
import sys
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from broker.errors import FileRefused, NotFound
from broker.scope import is_key
from broker.store.files import (
    DOCUMENT_TOO_LARGE,
    FILE_TOO_LARGE,
    MAX_DOCUMENT_BYTES,
    MAX_FILE_BYTES,
    refusal,
)
from broker.store.git import GitUnavailable
from broker.store.git import run as run_git
from broker.store.sops import flatten
from cli.caching import LRU

if TYPE_CHECKING:  # the CLI reads history without loading the broker's store
    from broker.store.tree import SecretStore, Snapshot

ADDED, CHANGED, REMOVED = "added", "changed", "removed"
LEAF_CACHE_ENTRIES = 20_000  # parsed blobs; a 1,000-commit history needs ~1,000
LEAF_CACHE_BYTES = 32 * 1024 * 1024  # estimated; shared ciphertext is interned, so less
LOG_CACHE_COMMITS = 50_000  # commits held across all cached logs (~600 bytes each)
_CHUNK = 64  # blobs read per cat-file run when a walk may stop early
_FILE_MODES = frozenset({"100644", "100755"})
_GIT_CONFIG = (
    "-c",
    "log.follow=false",
    "-c",
    "log.showSignature=false",
    "-c",
    "core.quotePath=off",
)
_LOG_FORMAT = "%x1e%H%x00%an%x00%ct%x00%s"

Leaf = str | tuple[str, str]  # a ciphertext string, or (type, text) of a plaintext scalar
Leaves = dict[str, Leaf]


@dataclass(frozen=True)
class Refused:
    """What a blob that is not served parses to: only why."""

    reason: str


Parsed = Leaves | Refused


class HistoryError(RuntimeError):
    """Git could not answer (an unknown commit, or not a repository)."""


@dataclass(frozen=True)
class FileChange:
    """One commit that touched the file: its blob there and in each parent (None: absent)."""

    commit: str
    committed_at: str  # RFC 3339 UTC, the committer's time
    author: str
    message: str  # the subject line
    blob: str | None
    parent_blobs: tuple[str | None, ...]


@dataclass(frozen=True)
class KeyChange:
    """A commit that changed one key (`change` is added, changed or removed)."""

    commit: str
    committed_at: str
    author: str
    message: str
    change: str

    def to_json(self) -> dict[str, str]:
        """One entry of a history answer's `versions`."""
        return {
            "version": self.commit,
            "committed_at": self.committed_at,
            "author": self.author,
            "message": self.message,
            "change": self.change,
        }


@dataclass(frozen=True)
class SkippedVersion:
    """A commit whose version of the file is not served, so history skips it."""

    commit: str
    committed_at: str
    author: str
    message: str
    reason: str

    def to_json(self) -> dict[str, str]:
        """An entry of the history answer's `skipped` list."""
        return {
            "version": self.commit,
            "committed_at": self.committed_at,
            "author": self.author,
            "message": self.message,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class FileLog:
    """The file's blob at a commit and every commit before it that touched the file."""

    blob: str | None
    changes: tuple[FileChange, ...]


# -- bounded caches of immutable facts ------------------------------------------------------


@dataclass
class CacheStats:
    """What the caches did since start-up (or `clear_caches()`): for tests and benchmarks."""

    blobs_parsed: int = 0
    logs_read: int = 0


_leaf_cache: LRU[str, Parsed] = LRU(LEAF_CACHE_ENTRIES, LEAF_CACHE_BYTES)
_log_cache: LRU[tuple[str, str, str], FileLog] = LRU(10_000, LOG_CACHE_COMMITS)  # in commits
stats = CacheStats()


def clear_caches() -> None:
    """Forget every parsed blob and log (a cold start, for benchmarks and tests)."""
    _leaf_cache.clear()
    _log_cache.clear()
    stats.blobs_parsed = stats.logs_read = 0


# -- ciphertext leaves of one SOPS YAML document ----------------------------------------------

_ENC_RE = re.compile(
    r"ENC\[[A-Za-z0-9_]+,data:[A-Za-z0-9+/=]*,iv:[A-Za-z0-9+/=]+,tag:[A-Za-z0-9+/=]+,type:[a-z]+\]"
)
_ENTRY_RE = re.compile(
    r'(?:(?P<plain>[A-Za-z_][A-Za-z0-9_.-]*)|"(?P<quoted>[A-Za-z0-9_. -]*)"):(?: (?P<value>.+))?'
)
# Plain words YAML 1.1 or 1.2 may read as something other than a string.
_NOT_PLAIN_STRINGS = frozenset({"true", "false", "null", "yes", "no", "on", "off", "y", "n"})


def ciphertext_leaves(data: bytes) -> Leaves:
    """Every addressable leaf of a SOPS YAML document, keyed like `broker.store.sops.flatten`,
    with its ciphertext (or, for a value SOPS left in plaintext, its type and text). The
    `sops` metadata is left out. A document that is not a YAML mapping has no leaves.
    FileRefused for a file that is not served."""
    return _readable(parse_blob(data))


def parse_blob(data: bytes) -> Parsed:
    """The leaves of a SOPS YAML document, or Refused: its YAML holds anchors or aliases,
    it is too large to read, or its values alone (their plaintext length is known from the
    ciphertext) make a decrypted document over 16 MiB."""
    reason = refusal(data)
    if reason is not None:
        return Refused(reason)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    fast = _scan_sops_layout(text)
    leaves = fast if fast is not None else _parse_yaml_leaves(text)
    if sum(map(_plaintext_bytes, leaves.values())) > MAX_DOCUMENT_BYTES:
        return Refused(DOCUMENT_TOO_LARGE)
    return leaves


def _readable(parsed: Parsed) -> Leaves:
    if isinstance(parsed, Refused):
        raise FileRefused(parsed.reason)
    return parsed


def _plaintext_bytes(leaf: Leaf) -> int:
    """The length of a leaf's plaintext: AES-GCM keeps it, so an ENC[...] value's is its
    base64 `data` decoded (counted, not decoded)."""
    if isinstance(leaf, tuple):
        return len(leaf[1])
    start = leaf.find(",data:") + 6 if leaf.startswith("ENC[") else 0
    end = leaf.find(",iv:", start) if start else -1
    if end < 0:
        return len(leaf)
    return (end - start) // 4 * 3 - leaf.count("=", max(start, end - 2), end)


def _scan_sops_layout(text: str) -> Leaves | None:
    """The leaves of a document laid out as `sops` writes YAML (block mappings of simple keys
    whose values are all ENC[...] strings), read line by line, ~50x faster than a YAML
    parser; None for anything else, which then goes to the full parser."""
    out: Leaves = {}
    levels: list[tuple[int, str]] = [(0, "")]  # (indent of the keys, path prefix)
    pending: tuple[int, str] | None = None  # a `key:` line: a mapping follows, or null
    in_metadata = False
    for raw in text.split("\n"):
        line = raw.rstrip()
        stripped = line.lstrip(" ")
        if not stripped:
            continue
        indent = len(line) - len(stripped)
        if in_metadata:
            if indent > 0:
                continue
            in_metadata = False
        if stripped[0] == "#":
            continue  # a comment (SOPS encrypts them into #ENC[...] lines)
        if "\t" in line:
            return None
        entry = _ENTRY_RE.fullmatch(stripped)
        if entry is None:
            return None
        name = entry["plain"]
        if name is None:
            name = entry["quoted"]
        elif name.lower() in _NOT_PLAIN_STRINGS:
            return None
        if pending is not None:
            if indent > pending[0]:
                levels.append((indent, pending[1]))
            pending = None
        while indent < levels[-1][0]:
            levels.pop()
        if indent != levels[-1][0]:
            return None
        value = entry["value"]
        if len(levels) == 1 and name == "sops":
            if value is not None:
                return None
            in_metadata = True
            continue
        path = levels[-1][1] + name
        if path in out:
            return None  # a duplicate key: the parser decides what that means
        if value is None:
            pending = (indent, path + "/")
        elif _ENC_RE.fullmatch(value):
            if is_key(path):
                # an unchanged value's ciphertext is the same in every blob: keep it once
                out[sys.intern(path)] = sys.intern(value)
        elif value not in ("{}", "[]"):
            return None
    return out


def _parse_yaml_leaves(text: str) -> Leaves:
    try:
        document = YAML(typ="safe").load(text)
    except (YAMLError, RecursionError):  # ruamel's composer recurses per nesting level
        return {}
    if not isinstance(document, Mapping):
        return {}
    body = {name: value for name, value in document.items() if name != "sops"}
    return {key: _leaf(value) for key, value in flatten(body).items()}


def _leaf(value: Any) -> Leaf:
    # A plaintext 1 and true compare equal in Python; their type tells them apart.
    return value if isinstance(value, str) else (type(value).__name__, repr(value))


def _leaves_weight(leaves: Parsed) -> int:
    if isinstance(leaves, Refused):
        return 200
    return 200 + sum(
        100 + len(k) + (len(v) if isinstance(v, str) else 32) for k, v in leaves.items()
    )


# -- git -------------------------------------------------------------------------------------------


def _git(git_dir: str, *args: str, stdin: bytes | None = None) -> bytes:
    try:
        answer = run_git(*_GIT_CONFIG, *args, git_dir=git_dir, stdin=stdin, binary=True)
    except GitUnavailable as exc:
        raise HistoryError(str(exc)) from None
    if not answer.ok:
        raise HistoryError(answer.reason)
    return answer.stdout


def _blob_sizes(git_dir: str, blob_ids: list[str]) -> dict[str, int]:
    """The size of each blob (a missing one is left out), in one cat-file run."""
    names = "".join(f"{b}\n" for b in blob_ids).encode()
    out = _git(git_dir, "cat-file", "--batch-check", stdin=names)
    sizes = {}
    for line in out.decode().splitlines():
        fields = line.split(" ")
        if len(fields) == 3 and fields[2].isdigit():
            sizes[fields[0]] = int(fields[2])
    return sizes


def _read_blobs(git_dir: str, blob_ids: list[str]) -> dict[str, bytes]:
    """The content of each blob (a missing one is left out), in one cat-file run."""
    out = _git(git_dir, "cat-file", "--batch", stdin="".join(f"{b}\n" for b in blob_ids).encode())
    found: dict[str, bytes] = {}
    pos = 0
    while pos < len(out):
        end = out.index(b"\n", pos)
        header = out[pos:end].split(b" ")
        pos = end + 1
        if len(header) == 3:
            size = int(header[2])
            found[header[0].decode()] = out[pos : pos + size]
            pos += size + 1
    return found


def blob_leaves(git_dir: str | Path, blob_ids: Iterable[str | None]) -> dict[str, Parsed]:
    """The ciphertext leaves of each blob (or Refused), parsing only those not seen before.
    A blob larger than MAX_FILE_BYTES is refused unread; the others are read at most about
    MAX_FILE_BYTES at a time."""
    wanted = {b for b in blob_ids if b is not None}
    known: dict[str, Parsed] = {}
    missing = []
    for blob in wanted:
        leaves = _leaf_cache.get(blob)
        if leaves is None:
            missing.append(blob)
        else:
            known[blob] = leaves
    if not missing:
        return known
    sizes = _blob_sizes(str(git_dir), sorted(missing))
    batch: list[str] = []
    batch_bytes = 0
    for blob in sorted(missing, key=lambda b: sizes.get(b, 0)):
        size = sizes.get(blob, 0)
        if size > MAX_FILE_BYTES:
            known[blob] = _remember(blob, Refused(FILE_TOO_LARGE))
            continue
        if batch and batch_bytes + size > MAX_FILE_BYTES:
            _parse_batch(str(git_dir), batch, known)
            batch, batch_bytes = [], 0
        batch.append(blob)
        batch_bytes += size
    if batch:
        _parse_batch(str(git_dir), batch, known)
    return known


def _parse_batch(git_dir: str, blobs: list[str], known: dict[str, Parsed]) -> None:
    contents = _read_blobs(git_dir, blobs)
    for blob in blobs:
        known[blob] = _remember(blob, parse_blob(contents.pop(blob, b"")))


def _remember(blob: str, parsed: Parsed) -> Parsed:
    stats.blobs_parsed += 1
    return _leaf_cache.put(blob, parsed, size=_leaves_weight(parsed))


def readable_leaves(git_dir: str | Path, blob: str) -> Leaves:
    """The ciphertext leaves of one blob; FileRefused when it is not served."""
    return _readable(blob_leaves(git_dir, [blob])[blob])


def _is_full_sha(commit: str) -> bool:
    return len(commit) in (40, 64) and all(c in "0123456789abcdef" for c in commit)


def resolve_commit(git_dir: str | Path, revision: str) -> str:
    """The full SHA of the commit `revision` names; HistoryError if it names none."""
    try:
        out = _git(
            str(git_dir),
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            f"{revision}^{{commit}}",
        )
    except HistoryError:
        raise HistoryError(f"unknown revision {revision!r}") from None
    return out.decode().strip()


def file_log(git_dir: str | Path, commit: str, file_path: str) -> FileLog:
    """The file's blob at `commit` (a revision; a full SHA is cached) and every commit
    reachable from it that touched the file, newest first. HistoryError for an unknown
    commit."""
    git_dir = str(git_dir)
    if not _is_full_sha(commit):
        commit = resolve_commit(git_dir, commit)
    cache_key = (git_dir, commit, file_path)
    cached = _log_cache.get(cache_key)
    if cached is not None:
        return cached
    try:
        listed = _git(git_dir, "ls-tree", "-z", "--full-tree", commit, "--", file_path)
    except HistoryError:
        raise HistoryError(f"unknown revision {commit!r}") from None
    blob = None
    for item in listed.split(b"\0"):
        meta, _, name = item.partition(b"\t")
        fields = meta.split(b" ")
        if name.decode("utf-8", "replace") == file_path and fields[0].decode() in _FILE_MODES:
            blob = fields[2].decode()
    raw = _git(
        git_dir,
        "log",
        "-z",
        f"--format={_LOG_FORMAT}",
        "--raw",
        "--no-abbrev",
        "--no-renames",
        "--diff-merges=combined",
        "--no-ext-diff",
        commit,
        "--",
        file_path,
    )
    stats.logs_read += 1
    log = FileLog(blob, tuple(_parse_log(raw.decode("utf-8", "replace"), file_path)))
    return _log_cache.put(cache_key, log, size=1 + len(log.changes))


def _parse_log(text: str, file_path: str) -> Iterable[FileChange]:
    """FileChanges from `git log -z` output. Fields are read by position between NULs
    (which no name or subject can hold), so nothing in a commit message can derail it."""
    tokens = text.split("\0")
    i = 0
    while i + 3 < len(tokens):
        head = tokens[i].lstrip("\n")
        if not head.startswith("\x1e"):
            i += 1
            continue
        commit, author, epoch, subject = head[1:], tokens[i + 1], tokens[i + 2], tokens[i + 3]
        committed_at = datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        i += 4
        found = None
        while i < len(tokens) and not tokens[i].lstrip("\n").startswith("\x1e"):
            status = tokens[i].lstrip("\n")
            if status.startswith(":") and i + 1 < len(tokens):
                if tokens[i + 1] == file_path:
                    found = _raw_blobs(status)
                i += 2
            else:
                i += 1
        if found is not None:
            yield FileChange(commit, committed_at, author, subject, found[0], found[1])


def _raw_blobs(status: str) -> tuple[str | None, tuple[str | None, ...]]:
    """(new blob, each parent's blob) from a raw diff line, `:` or combined `::`."""
    parents = len(status) - len(status.lstrip(":"))
    fields = status[parents:].split(" ")
    modes, ids = fields[: parents + 1], fields[parents + 1 : 2 * parents + 2]
    blobs = [
        oid if mode in _FILE_MODES and oid.strip("0") else None
        for mode, oid in zip(modes, ids, strict=True)
    ]
    return blobs[-1], tuple(blobs[:-1])


# -- per key ---------------------------------------------------------------------------------------


def _change_of(change: FileChange, key: str, leaves: Mapping[str, Leaves]) -> str | None:
    """How `change` changed `key`: added, changed, removed, or None when its ciphertext there
    matches a parent's (the change, if any, belongs to that parent's line)."""
    empty: Leaves = {}
    new = leaves.get(change.blob, empty).get(key) if change.blob else None
    olds = [leaves.get(b, empty).get(key) if b else None for b in change.parent_blobs]
    if any(old == new for old in olds):
        return None
    if new is None:
        return REMOVED
    if all(old is None for old in olds):
        return ADDED
    return CHANGED


def _key_change(change: FileChange, kind: str) -> KeyChange:
    return KeyChange(change.commit, change.committed_at, change.author, change.message, kind)


def _blobs_of(changes: Iterable[FileChange]) -> list[str | None]:
    return [b for c in changes for b in (c.blob, *c.parent_blobs)]


def _readable_log(
    git_dir: str | Path, log: FileLog
) -> tuple[list[FileChange], dict[str, Leaves], list[SkippedVersion]]:
    """The log's changes with every blob parsed, minus those whose version is refused (they
    are returned as skipped); a parent version that is refused is replaced by the versions
    behind it, so the next readable commit is compared with the last readable ones."""
    parsed = blob_leaves(git_dir, _blobs_of(log.changes))
    leaves = {b: p for b, p in parsed.items() if not isinstance(p, Refused)}
    refused = {b: p.reason for b, p in parsed.items() if isinstance(p, Refused)}
    if not refused:
        return list(log.changes), leaves, []
    behind: dict[str, list[str | None]] = {}
    for change in log.changes:
        if change.blob in refused:
            behind.setdefault(change.blob, []).extend(change.parent_blobs)

    def stand_ins(blobs: Iterable[str | None]) -> tuple[str | None, ...]:
        found: list[str | None] = []
        seen: set[str] = set()
        todo = deque(blobs)
        while todo:
            blob = todo.popleft()
            if blob is not None and blob in refused:
                if blob not in seen:
                    seen.add(blob)
                    todo.extend(behind.get(blob, ()))
            elif blob not in found:
                found.append(blob)
        return tuple(found)

    changes = [
        replace(c, parent_blobs=stand_ins(c.parent_blobs))
        for c in log.changes
        if c.blob not in refused
    ]
    skipped = [
        SkippedVersion(c.commit, c.committed_at, c.author, c.message, refused[c.blob])
        for c in log.changes
        if c.blob is not None and c.blob in refused
    ]
    return changes, leaves, skipped


def key_history(git_dir: str | Path, commit: str, file_path: str, key: str) -> list[KeyChange]:
    """Every commit reachable from `commit` that added, changed or removed `key` in the
    file, newest first ([] if the key never existed); commits whose version of the file is
    refused are left out (see `skipped_versions`). HistoryError for an unknown commit."""
    changes, leaves, _ = _readable_log(git_dir, file_log(git_dir, commit, file_path))
    found = []
    for change in changes:
        kind = _change_of(change, key, leaves)
        if kind is not None:
            found.append(_key_change(change, kind))
    return found


def skipped_versions(git_dir: str | Path, commit: str, file_path: str) -> list[SkippedVersion]:
    """The commits reachable from `commit` whose version of the file is not served,
    newest first: history leaves them out."""
    return _readable_log(git_dir, file_log(git_dir, commit, file_path))[2]


def last_changes(git_dir: str | Path, commit: str, file_path: str) -> dict[str, KeyChange]:
    """For each key in the file at `commit`, the newest commit that gave it its current
    ciphertext (added or changed): its rotation age. {} when the file is absent there;
    FileRefused when it is not served there."""
    log = file_log(git_dir, commit, file_path)
    if log.blob is None:
        return {}
    current = readable_leaves(git_dir, log.blob)
    remaining = set(current)
    found: dict[str, KeyChange] = {}
    for start in range(0, len(log.changes), _CHUNK):
        if not remaining:
            break
        chunk = log.changes[start : start + _CHUNK]
        leaves = blob_leaves(git_dir, _blobs_of(chunk))
        if any(isinstance(parsed, Refused) for parsed in leaves.values()):
            # Refused versions stand for the ones behind them: walk the whole log instead.
            changes, readable, _ = _readable_log(git_dir, log)
            found = {}
            _note_last_changes(changes, readable, current, set(current), found)
            return found
        _note_last_changes(chunk, leaves, current, remaining, found)  # type: ignore[arg-type]
    return found


def _note_last_changes(
    changes: Iterable[FileChange],
    leaves: Mapping[str, Leaves],
    current: Leaves,
    remaining: set[str],
    found: dict[str, KeyChange],
) -> None:
    for change in changes:
        new = leaves.get(change.blob, {}) if change.blob else {}
        for key in [k for k in remaining if new.get(k) == current[k]]:
            kind = _change_of(change, key, leaves)
            if kind is not None:
                found[key] = _key_change(change, kind)
                remaining.discard(key)


def current_keys(git_dir: str | Path, commit: str, file_path: str) -> list[str] | None:
    """The keys of the file at `commit`, sorted; None when it has no such file, FileRefused
    when it is not served there."""
    log = file_log(git_dir, commit, file_path)
    if log.blob is None:
        return None
    return sorted(readable_leaves(git_dir, log.blob))


def history_answer(
    store: SecretStore, snapshot: Snapshot, environment: str, key: str
) -> dict[str, object]:
    """The history answer of `key` at the snapshot's commit: `versions` newest
    first, and `skipped` (only when there are any) for the versions not served.

    NotFound when the environment's file or the key never existed in that history;
    FileRefused when the file at the snapshot is not served. Outside Git there is no
    history: [] when the key exists in the file on disk, else NotFound. HistoryError (a
    server fault, not the caller's) when git itself fails."""
    answer: dict[str, object] = {"environment": environment, "key": key}
    tree = store.tree
    git_dir = tree.git_dir
    if git_dir is None or snapshot.version is None:
        found = tree.blob(snapshot, environment)
        if found is None:
            raise NotFound(f"environment {environment!r} not found")
        content_id, data = found
        if data is None:
            data = tree.blob_data(content_id)
        if key not in ciphertext_leaves(data):
            raise NotFound(f"key {key!r} not found")
        answer["versions"] = []
        return answer
    path = tree.file_path(environment)
    log = file_log(git_dir, snapshot.version, path)
    if not log.changes:
        raise NotFound(f"environment {environment!r} not found")
    if log.blob is not None:
        readable_leaves(git_dir, log.blob)  # FileRefused: the environment is not served
    changes = key_history(git_dir, snapshot.version, path, key)
    if not changes:
        raise NotFound(f"key {key!r} not found")
    answer["versions"] = [change.to_json() for change in changes]
    skipped = skipped_versions(git_dir, snapshot.version, path)
    if skipped:
        answer["skipped"] = [version.to_json() for version in skipped]
    return answer
