"""Where secrets are read from: the committed tree at a Git ref, or a plain directory.

`SecretStore.served()` names the tree being served now (a commit, or the disk);
`document()` gives one environment's decrypted document from that tree. Git objects
are read, never the work tree, so uncommitted edits are never served.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Protocol

import git
import gitdb.exc

from broker.errors import BadRequest, NotFound
from broker.sops import Decryptor, Value

SUFFIX = ".enc.yaml"
VERSION_RE = re.compile(r"[0-9a-fA-F]{7,40}")
_UNSTABLE_REF_CHARS = set("~^:@{}")


@dataclass(frozen=True)
class Snapshot:
    """One servable tree: `version` is the commit SHA (None when served from disk)."""

    version: str | None
    committed_at: str | None


class Tree(Protocol):
    def served(self) -> Snapshot: ...
    def at_version(self, version: str) -> Snapshot: ...
    def blob(self, snapshot: Snapshot, environment: str) -> tuple[str, bytes | None] | None: ...
    def environments(self, snapshot: Snapshot) -> list[str]: ...


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
        """The decrypted document; NotFound when the environment has no file there."""
        found = self.tree.blob(snapshot, environment)
        if found is None:
            raise NotFound(f"environment {environment!r} not found")
        content_id, data = found

        def load() -> bytes:
            if data is not None:
                return data
            return self.tree.blob_data(content_id)  # type: ignore[attr-defined]

        return self.decryptor.document(content_id, load)

    def environments(self, snapshot: Snapshot) -> list[str]:
        return self.tree.environments(snapshot)


def open_tree(secrets_dir: Path, ref: str) -> Tree:
    """A GitTree when `secrets_dir` lies inside a Git work tree, else a DiskTree."""
    try:
        repo = git.Repo(secrets_dir, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return DiskTree(secrets_dir)
    if repo.bare or repo.working_tree_dir is None:
        return DiskTree(secrets_dir)
    top = Path(repo.working_tree_dir).resolve()
    subdir = secrets_dir.resolve().relative_to(top).as_posix()
    return GitTree(repo, "" if subdir == "." else subdir, ref)


class DiskTree:
    """A directory outside Git: no versions; content ids are hashes of the bytes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def served(self) -> Snapshot:
        return Snapshot(None, None)

    def at_version(self, version: str) -> Snapshot:
        raise BadRequest("version: the secrets are not in a Git repository")

    def blob(self, snapshot: Snapshot, environment: str) -> tuple[str, bytes | None] | None:
        try:
            data = (self.directory / f"{environment}{SUFFIX}").read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return "sha256:" + hashlib.sha256(data).hexdigest(), data

    def environments(self, snapshot: Snapshot) -> list[str]:
        return sorted(p.name[: -len(SUFFIX)] for p in self.directory.glob(f"*{SUFFIX}"))


class GitTree:
    """The committed tree at a ref. The ref is re-resolved only when a ref file changes,
    so a request costs a few stat() calls, not a git process."""

    def __init__(self, repo: git.Repo, subdir: str, ref: str) -> None:
        self.repo = repo
        self.subdir = subdir
        self.ref = ref
        self.git_dir = Path(repo.git_dir)
        self.common_dir = Path(repo.common_dir)
        self._lock = threading.Lock()  # GitPython's object reader is not thread-safe
        self._fingerprint: tuple | None = None
        self._served: Snapshot | None = None
        self._commit_times: dict[str, str] = {}
        self._blob_ids: dict[tuple[str, str], str | None] = {}
        self._reachable: dict[tuple[str, str], bool] = {}

    # -- the served ref ---------------------------------------------------------------
    def _ref_files(self) -> list[Path]:
        names = [self.ref, f"refs/{self.ref}", f"refs/tags/{self.ref}", f"refs/heads/{self.ref}",
                 f"refs/remotes/{self.ref}", f"refs/remotes/{self.ref}/HEAD"]
        files = [self.git_dir / "HEAD", self.common_dir / "packed-refs"]
        for base in {self.git_dir, self.common_dir}:
            files.extend(base / name for name in names)
        target = self._symbolic_target()
        if target:
            files.extend([self.git_dir / target, self.common_dir / target])
        return files

    def _symbolic_target(self) -> str | None:
        for base in (self.git_dir, self.common_dir):
            try:
                text = (base / self.ref).read_text().strip()
            except (OSError, ValueError):
                continue
            if text.startswith("ref: "):
                return text[5:]
        return None

    def _current_fingerprint(self) -> tuple | None:
        if _UNSTABLE_REF_CHARS & set(self.ref):
            return None
        stats = []
        for path in self._ref_files():
            try:
                st = os.stat(path)
                stats.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                stats.append(None)
        return tuple(stats)

    def served(self) -> Snapshot:
        fingerprint = self._current_fingerprint()
        if fingerprint is not None and fingerprint == self._fingerprint and self._served:
            return self._served
        sha = self._rev_parse(self.ref)
        if sha is None:
            raise NotFound("the served ref has no commit")
        snapshot = Snapshot(sha, self._commit_time(sha))
        self._fingerprint, self._served = fingerprint, snapshot
        return snapshot

    def _git(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "--git-dir", str(self.git_dir), *args],
            capture_output=True, text=True, check=False, timeout=30,
        )

    def _rev_parse(self, name: str) -> str | None:
        proc = self._git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}")
        sha = proc.stdout.strip()
        return sha if proc.returncode == 0 and len(sha) == 40 else None

    def _commit_time(self, sha: str) -> str:
        cached = self._commit_times.get(sha)
        if cached is None:
            with self._lock:
                epoch = self.repo.commit(sha).committed_date
            cached = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._commit_times[sha] = cached
        return cached

    # -- other versions -----------------------------------------------------------------
    def at_version(self, version: str) -> Snapshot:
        """The tree at a commit reachable from the served ref: 400 for anything that is not
        7-40 hex digits, 404 for an unknown or unreachable commit."""
        if not VERSION_RE.fullmatch(version):
            raise BadRequest("version must be a commit SHA of 7 to 40 hex digits")
        served = self.served()
        sha = self._rev_parse(version.lower())
        if sha is None or not self._is_reachable(sha, served.version):  # type: ignore[arg-type]
            raise NotFound("version not found")
        return Snapshot(sha, self._commit_time(sha))

    def _is_reachable(self, sha: str, head: str) -> bool:
        key = (sha, head)
        known = self._reachable.get(key)
        if known is None:
            known = self._git("merge-base", "--is-ancestor", sha, head).returncode == 0
            self._reachable[key] = known
        return known

    # -- blobs --------------------------------------------------------------------------------
    def file_path(self, environment: str) -> str:
        return str(PurePosixPath(self.subdir, f"{environment}{SUFFIX}")) if self.subdir else (
            f"{environment}{SUFFIX}"
        )

    def blob(self, snapshot: Snapshot, environment: str) -> tuple[str, bytes | None] | None:
        key = (snapshot.version or "", environment)
        if key not in self._blob_ids:
            with self._lock:
                try:
                    obj = self.repo.commit(snapshot.version).tree / self.file_path(environment)
                    blob_id = obj.hexsha if obj.type == "blob" else None
                except KeyError:
                    blob_id = None
            self._blob_ids[key] = blob_id
        blob_id = self._blob_ids[key]
        return None if blob_id is None else (blob_id, None)

    def blob_data(self, blob_id: str) -> bytes:
        with self._lock:
            try:
                return self.repo.odb.stream(bytes.fromhex(blob_id)).read()
            except (gitdb.exc.BadObject, ValueError):
                raise NotFound("environment not found") from None

    def environments(self, snapshot: Snapshot) -> list[str]:
        with self._lock:
            tree = self.repo.commit(snapshot.version).tree
            if self.subdir:
                try:
                    tree = tree / self.subdir
                except KeyError:
                    return []
            return sorted(
                b.name[: -len(SUFFIX)] for b in tree.blobs if b.name.endswith(SUFFIX)
            )
