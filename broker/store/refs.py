"""Reading a Git ref straight from the repository's files, without a `git` process.

A files-backend repository keeps refs as loose files (`refs/heads/main`, one line) and in
`packed-refs`; Git replaces a loose ref by renaming a new file over it, so one read gives
either the old or the new commit, whole. Each request checks the files again: a file
settled for RACY_SECONDS costs one stat, and its content is reread as soon as its inode,
size or timestamps change; a file written more recently is always reread (Git's own
"racy clean" rule: a rewrite within one timestamp tick looks unchanged). So a new commit
is never missed, and no `git` process runs per request. Whatever these files cannot answer
for certain (a reftable repository, a broken or dangling ref, an odd name) gives None, and
the caller asks `git` instead.
"""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

from cli.caching import BoundedMemo

# git's order for turning a short name into a ref (`git help revisions`); first found wins.
DWIM_RULES = (
    "{}",
    "refs/{}",
    "refs/tags/{}",
    "refs/heads/{}",
    "refs/remotes/{}",
    "refs/remotes/{}/HEAD",
)
_OBJECT_ID = re.compile(rb"[0-9a-f]{40}")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_./-]+")
MAX_SYMREF_DEPTH = 5
MAX_REMEMBERED_PATHS = 256
# A ref file changed this recently may change again within one timestamp tick, so what was
# read from it is trusted only once it is older than this (Git's "racy clean" rule).
RACY_SECONDS = 2.0
_PER_WORKTREE_PREFIXES = ("refs/bisect/", "refs/worktree/", "refs/rewritten/")


class _Missing:
    """No such ref in the files (as opposed to None: the files cannot say)."""


MISSING = _Missing()


class RefReader:
    """Resolves ref names to object ids from a repository's loose refs and packed-refs."""

    def __init__(self, git_dir: Path, common_dir: Path, racy_seconds: float = RACY_SECONDS) -> None:
        self.git_dir = str(git_dir)
        self.racy_seconds = racy_seconds
        self.common_dir = str(common_dir)
        self.packed_refs_path = os.path.join(self.common_dir, "packed-refs")
        # reftable keeps refs in binary tables this reader does not parse: git answers.
        self.usable = not os.path.exists(os.path.join(self.common_dir, "reftable"))
        self._packed: dict[str, str] = {}
        self._packed_stat: tuple[int, int, int, int] | None = None
        self._paths: BoundedMemo[str, str] = BoundedMemo(MAX_REMEMBERED_PATHS)  # name -> file
        # loose file -> (its identity and timestamps, its content), for settled files only
        self._contents: BoundedMemo[str, tuple[tuple[int, int, int, int, int], bytes]] = (
            BoundedMemo(MAX_REMEMBERED_PATHS)
        )
        # name -> (the settled loose files its last answer was read from, with their keys;
        # that answer): while each file still has its key, the answer stands.
        self._answers: BoundedMemo[str, tuple[tuple[tuple[str, tuple[int, ...]], ...], str]] = (
            BoundedMemo(MAX_REMEMBERED_PATHS)
        )

    def resolve(self, name: str) -> str | None:
        """The object id (hex) that `git rev-parse name` would start from, or None when the
        files do not say for certain. Never peels tags."""
        remembered = self._answers.get(name)
        if remembered is not None:
            try:
                if all(_file_key(os.stat(path)) == key for path, key in remembered[0]):
                    return remembered[1]  # one stat a file on the way: nothing moved
            except OSError:
                pass
            self._answers.pop(name)
        if not self.usable or not _SAFE_NAME.fullmatch(name) or ".." in name:
            return None
        read: list[tuple[str, tuple[int, ...] | None]] = []  # this call's own: thread-safe
        for rule in DWIM_RULES:
            found = self._lookup(rule.format(name), 0, read)
            if found is not MISSING:
                self._remember(name, found, read)  # type: ignore[arg-type]
                return found  # type: ignore[return-value]
        return None

    def _remember(
        self, name: str, found: str | None, read: list[tuple[str, tuple[int, ...] | None]]
    ) -> None:
        """Keep an answer that came from settled loose files only (no packed-refs, no
        lookup that missed a file): re-checking those files alone then proves it."""
        if found is None or not read or any(key is None for _, key in read):
            return
        self._answers.put(name, (tuple(read), found))  # type: ignore[arg-type]

    def _lookup(
        self, full_name: str, depth: int, read: list[tuple[str, tuple[int, ...] | None]]
    ) -> str | None | _Missing:
        raw = self._read_loose(full_name, read)
        if raw is None:
            sha = self._packed_refs().get(full_name)
            return MISSING if sha is None else sha
        if raw.startswith(b"ref:"):
            target = raw[4:].strip().decode("utf-8", "replace")
            if depth >= MAX_SYMREF_DEPTH or not _SAFE_NAME.fullmatch(target) or ".." in target:
                return None
            found = self._lookup(target, depth + 1, read)
            return None if found is MISSING else found  # a dangling symref: let git say
        text = raw.strip()
        return text.decode() if _OBJECT_ID.fullmatch(text) else None

    def _read_loose(
        self, full_name: str, read: list[tuple[str, tuple[int, ...] | None]]
    ) -> bytes | None:
        path = self._paths.get(full_name)
        if path is None:
            per_worktree = not full_name.startswith("refs/") or full_name.startswith(
                _PER_WORKTREE_PREFIXES
            )
            path = os.path.join(self.git_dir if per_worktree else self.common_dir, full_name)
            self._paths.put(full_name, path)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            read.append((path, None))  # a file that may appear later: never remembered
            return None
        remembered = self._contents.get(path)
        if remembered is not None and remembered[0] == _file_key(st):
            read.append((path, remembered[0]))
            return remembered[1]  # one stat when the file has not changed
        read.append((path, None))  # read now, settled or not: not remembered yet
        if not stat.S_ISREG(st.st_mode):
            return None  # refs/remotes/<name> is a directory of that remote's refs
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        try:
            opened = os.fstat(fd)  # the file read, which may be newer than the one stat saw
            content = os.read(fd, 4096)
        finally:
            os.close(fd)
        # A file written within RACY_SECONDS could be rewritten with the same size and
        # timestamps (and a reused inode): only a settled file's content is remembered.
        if self._settled(opened):
            self._contents.put(path, (_file_key(opened), content))
        else:
            self._contents.pop(path)
        return content

    def _settled(self, st: os.stat_result) -> bool:
        """Neither written nor changed within the racy window."""
        return time.time() - max(st.st_mtime, st.st_ctime) > self.racy_seconds

    def _packed_refs(self) -> dict[str, str]:
        try:
            st = os.stat(self.packed_refs_path)
        except FileNotFoundError:
            self._packed, self._packed_stat = {}, None
            return self._packed
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key == self._packed_stat:
            return self._packed
        packed = parse_packed_refs(Path(self.packed_refs_path).read_bytes())
        self._packed, self._packed_stat = packed, key if self._settled(st) else None
        return packed


def _file_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What changes when a file is replaced or rewritten (Git renames a new file over a ref)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def parse_packed_refs(data: bytes) -> dict[str, str]:
    """ref name -> object id from the text of a packed-refs file (peeled lines skipped)."""
    refs: dict[str, str] = {}
    for line in data.splitlines():
        if not line or line.startswith((b"#", b"^")):
            continue
        sha, _, name = line.partition(b" ")
        if _OBJECT_ID.fullmatch(sha):
            refs[name.decode("utf-8", "replace")] = sha.decode()
    return refs
