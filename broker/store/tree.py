"""Where secrets are read from: the committed tree at a Git ref, or a plain directory.

`SecretStore.served()` names the tree being served now (a commit, or the disk);
`document()` gives one environment's decrypted document from that tree. Git objects
are read, never the work tree, so uncommitted edits are never served.

Per request this costs a couple of small file reads (the ref) and dictionary lookups:
snapshots, blob ids and decrypted documents are all keyed by immutable object ids, so
they never need invalidating, only bounding.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Protocol

from broker.errors import BadRequest, FileRefused, NotFound
from broker.store.files import FILE_TOO_LARGE, MAX_FILE_BYTES, SUFFIX, environment_of
from broker.store.git import (
    Answer,
    GitUnavailable,
    ObjectReader,
    Repository,
    open_repository,
)
from broker.store.git import run as run_git
from broker.store.refs import RefReader
from broker.store.sops import Decryptor, Value
from cli.caching import BoundedMemo

VERSION_RE = re.compile(r"[0-9a-fA-F]{7,40}")
FULL_SHA_RE = re.compile(r"[0-9a-f]{40}")
_UNSTABLE_REF_CHARS = set("~^:@{}")
MEMO_ENTRIES = 4096  # per memo table; a full table is emptied and refilled on demand
RACY_SECONDS = 2.0  # a file changed this recently may change again unseen within one tick


def committed_at(commit_data: bytes) -> str | None:
    """The committer time of a raw commit object, RFC 3339 UTC."""
    header = commit_data.split(b"\n\n", 1)[0]
    for line in header.split(b"\n"):
        if line.startswith(b"committer "):
            epoch = int(line.rsplit(b" ", 2)[1])
            return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return None


@dataclass(frozen=True)
class Snapshot:
    """One servable tree: `version` is the commit SHA (None when served from disk)."""

    version: str | None
    committed_at: str | None


@dataclass(frozen=True)
class Listing:
    """The secrets files of a tree: `environments` are served (by name, sorted);
    `misnamed` are the names of `*.enc.yaml` files that are not `<environment>.enc.yaml`
    with a valid environment, so they are not."""

    environments: tuple[str, ...]
    misnamed: tuple[str, ...]


def list_files(names: list[str]) -> Listing:
    environments, misnamed = [], []
    for name in names:
        environment = environment_of(name)
        if environment is not None:
            environments.append(environment)
        elif name.endswith(SUFFIX):
            misnamed.append(name)
    return Listing(tuple(sorted(environments)), tuple(sorted(misnamed)))


class Tree(Protocol):
    """Where the secrets files are read from: a Git tree at a ref, or a directory."""

    @property
    def git_dir(self) -> Path | None:
        """None outside Git: no versions, no history."""

    @property
    def common_dir(self) -> Path | None: ...

    def served(self) -> Snapshot: ...
    def at_version(self, version: str) -> Snapshot: ...
    def blob(self, snapshot: Snapshot, environment: str) -> tuple[str, bytes | None] | None:
        """(content id, its bytes, or None when `blob_data` reads them), or None."""

    def blob_data(self, content_id: str) -> bytes: ...
    def file_path(self, environment: str) -> str:
        """The environment's file, relative to the repository's top (or the directory)."""

    def listing(self, snapshot: Snapshot) -> Listing: ...


class SecretStore:
    """Decrypted documents from a Tree, cached by content id in a Decryptor."""

    def __init__(self, tree: Tree, decryptor: Decryptor) -> None:
        self.tree = tree
        self.decryptor = decryptor

    @classmethod
    def open(cls, secrets_dir: Path, ref: str, decryptor: Decryptor) -> SecretStore:
        return cls(open_tree(secrets_dir, ref), decryptor)

    def served(self) -> Snapshot:
        return self.tree.served()

    def at_version(self, version: str) -> Snapshot:
        return self.tree.at_version(version)

    def document(self, snapshot: Snapshot, environment: str) -> dict[str, Value]:
        """The decrypted document; NotFound when the environment has no file there,
        FileRefused when the file is not served, DecryptFailed when sops cannot
        decrypt it."""
        found = self.tree.blob(snapshot, environment)
        if found is None:
            raise NotFound(f"environment {environment!r} not found")
        content_id, data = found

        def load() -> bytes:
            if data is not None:
                return data
            return self.tree.blob_data(content_id)

        return self.decryptor.document(content_id, load)

    def environments(self, snapshot: Snapshot) -> list[str]:
        """The environments with a file in the tree (files with other names are left out)."""
        return list(self.tree.listing(snapshot).environments)

    def listing(self, snapshot: Snapshot) -> Listing:
        return self.tree.listing(snapshot)


def open_tree(secrets_dir: Path, ref: str) -> Tree:
    """A GitTree when `secrets_dir` lies inside a Git work tree, else a DiskTree."""
    repo = open_repository(secrets_dir)
    if repo is None or repo.working_tree_dir is None:
        return DiskTree(secrets_dir)
    top = Path(repo.working_tree_dir).resolve()
    subdir = secrets_dir.resolve().relative_to(top).as_posix()
    return GitTree(repo, "" if subdir == "." else subdir, ref)


class DiskTree:
    """A directory outside Git: no versions; content ids are hashes of the bytes.

    A file is re-read and re-hashed only when its stat changes; one changed within the
    last RACY_SECONDS is re-read on every request, so a write is never missed."""

    git_dir: Path | None = None
    common_dir: Path | None = None

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files: BoundedMemo[str, tuple[tuple[int, int, int, int], str, bytes]] = BoundedMemo(
            256
        )

    def served(self) -> Snapshot:
        return Snapshot(None, None)

    def at_version(self, version: str) -> Snapshot:
        raise BadRequest("version: the secrets are not in a Git repository")

    def blob(self, snapshot: Snapshot, environment: str) -> tuple[str, bytes | None] | None:
        """(hash, bytes) of the environment's file; None when it has none. FileRefused for
        a file too large to read."""
        path = os.path.join(self.directory, f"{environment}{SUFFIX}")
        try:
            st = os.stat(path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            known = self._files.get(path)
            if known is not None and known[0] == stamp:
                return known[1], known[2]
            if st.st_size > MAX_FILE_BYTES:
                raise FileRefused(FILE_TOO_LARGE)
            with open(path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)  # it may have grown since the stat
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        if len(data) > MAX_FILE_BYTES:
            raise FileRefused(FILE_TOO_LARGE)
        content_id = "sha256:" + hashlib.sha256(data).hexdigest()
        if time.time() - st.st_ctime > RACY_SECONDS:
            self._files.put(path, (stamp, content_id, data))
        return content_id, data

    def blob_data(self, content_id: str) -> bytes:
        raise NotFound("environment not found")  # `blob` hands over a file's bytes itself

    def file_path(self, environment: str) -> str:
        return f"{environment}{SUFFIX}"

    def listing(self, snapshot: Snapshot) -> Listing:
        return list_files([p.name for p in self.directory.glob(f"*{SUFFIX}") if p.is_file()])


class GitTree:
    """The committed tree at a ref. The ref is read from the repository's ref files on every
    request (a few small reads, no git process), so a new commit is served from the next
    request on; `git` itself is asked only when those files cannot answer."""

    def __init__(self, repo: Repository, subdir: str, ref: str) -> None:
        self.repo = repo
        self.subdir = subdir
        self.ref = ref
        self.git_dir = Path(repo.git_dir)
        self.common_dir = Path(repo.common_dir)
        self._objects = ObjectReader(repo)
        self._refs = RefReader(self.git_dir, self.common_dir)
        self._fixed = FULL_SHA_RE.fullmatch(ref.lower()) is not None  # a commit never moves
        self._dynamic = bool(_UNSTABLE_REF_CHARS & set(ref))  # e.g. main~1: git every time
        self._last: tuple[str, Snapshot] | None = None  # (ref's object id, its snapshot)
        self._snapshots: BoundedMemo[str, Snapshot] = BoundedMemo(MEMO_ENTRIES)
        self._blob_ids: BoundedMemo[tuple[str, str], str | None] = BoundedMemo(MEMO_ENTRIES)
        self._blob_sizes: BoundedMemo[str, int] = BoundedMemo(MEMO_ENTRIES)
        self._versions: BoundedMemo[tuple[str, str], str | None] = BoundedMemo(MEMO_ENTRIES)
        self._reachable: BoundedMemo[tuple[str, str], bool] = BoundedMemo(MEMO_ENTRIES)
        self._listings: BoundedMemo[str, Listing] = BoundedMemo(256)

    # -- the served ref ---------------------------------------------------------------
    def served(self) -> Snapshot:
        """The commit the ref names now; NotFound when it names none."""
        if self._fixed and self._last is not None:
            return self._last[1]
        object_id = None if self._dynamic else self._refs.resolve(self.ref)
        last = self._last
        if object_id is not None and last is not None and last[0] == object_id:
            return last[1]
        if object_id is None:
            object_id = self._rev_parse(self.ref)
            if object_id is None:
                raise NotFound("the served ref has no commit")
        snapshot = self._snapshots.get(object_id)
        if snapshot is None:
            snapshot = self._commit_snapshot(object_id)
            if snapshot is None:  # not a commit after all: let git say what the ref names
                sha = self._rev_parse(self.ref)
                snapshot = None if sha is None else self._commit_snapshot(sha)
            if snapshot is None:
                raise NotFound("the served ref has no commit")
            self._snapshots.put(object_id, snapshot)
        self._last = (object_id, snapshot)
        return snapshot

    def _commit_snapshot(self, object_id: str) -> Snapshot | None:
        """The commit an object id names (through annotated tags) and its time, in one
        read from GitPython's long-lived `git cat-file`; None if it names no commit."""
        found = self._objects.data(f"{object_id}^{{commit}}")
        if found is None or found[1] != "commit":
            return None
        return Snapshot(found[0], committed_at(found[2]))

    def _git(self, *args: str) -> Answer:
        try:
            return run_git(*args, git_dir=self.git_dir, timeout=30)
        except GitUnavailable as exc:
            return Answer(1, "", str(exc))

    def _rev_parse(self, name: str) -> str | None:
        found = self._git(
            "rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}"
        )
        sha = found.stdout.strip()
        return sha if found.ok and len(sha) == 40 else None

    # -- other versions -----------------------------------------------------------------
    def at_version(self, version: str) -> Snapshot:
        """The tree at a commit reachable from the served ref: 400 for anything that is not
        7-40 hex digits, 404 for an unknown or unreachable commit."""
        if not VERSION_RE.fullmatch(version):
            raise BadRequest("version must be a commit SHA of 7 to 40 hex digits")
        served = self.served()
        head = served.version or ""
        key = (version.lower(), head)
        if key in self._versions:
            sha = self._versions.get(key)
        else:
            sha = self._rev_parse(version.lower())
            if sha is not None and not self._is_reachable(sha, head):
                sha = None
            self._versions.put(key, sha)
        if sha is None:
            raise NotFound("version not found")
        snapshot = self._snapshots.get(sha) or self._commit_snapshot(sha)
        if snapshot is None:
            raise NotFound("version not found")
        return self._snapshots.put(sha, snapshot)

    def _is_reachable(self, sha: str, head: str) -> bool:
        key = (sha, head)
        known = self._reachable.get(key)
        if known is None:
            known = self._git("merge-base", "--is-ancestor", sha, head).returncode == 0
            self._reachable.put(key, known)
        return known

    # -- blobs --------------------------------------------------------------------------------
    def file_path(self, environment: str) -> str:
        return (
            str(PurePosixPath(self.subdir, f"{environment}{SUFFIX}"))
            if self.subdir
            else f"{environment}{SUFFIX}"
        )

    def blob(self, snapshot: Snapshot, environment: str) -> tuple[str, bytes | None] | None:
        """(blob id, None) of the environment's file in that commit, or None if it has none."""
        key = (snapshot.version or "", environment)
        if key in self._blob_ids:
            blob_id = self._blob_ids.get(key)
        else:
            name = f"{snapshot.version}:{self.file_path(environment)}"
            header = self._objects.header(name)  # "<commit>:<path>" names the blob
            blob_id = header[0] if header is not None and header[1] == "blob" else None
            if header is not None and blob_id is not None:
                self._blob_sizes.put(blob_id, header[2])
            self._blob_ids.put(key, blob_id)
        return None if blob_id is None else (blob_id, None)

    def blob_data(self, blob_id: str) -> bytes:
        """The blob's bytes; FileRefused for one too large to read (its size is known
        from its header, so nothing of it is read)."""
        try:
            size = self._blob_sizes.get(blob_id)
            if size is None:
                size = self._objects.size(blob_id)
            if size > MAX_FILE_BYTES:
                raise FileRefused(FILE_TOO_LARGE)
            return self._objects.blob(blob_id)
        except ValueError:
            raise NotFound("environment not found") from None

    def listing(self, snapshot: Snapshot) -> Listing:
        version = snapshot.version or ""
        known = self._listings.get(version)
        if known is not None:
            return known
        names = self._objects.file_names(version, self.subdir)
        found = Listing((), ()) if names is None else list_files(names)
        return self._listings.put(version, found)
