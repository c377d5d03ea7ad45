"""The one place that runs git: `run` for a command and its answer, `ObjectReader` for
objects read through one long-lived `git cat-file` (GitPython's), `open_repository` to
find the repository holding a path.

Callers name a repository by its git directory (`--git-dir`) or a directory inside its
work tree (`-C`). A git that cannot be started or times out raises GitUnavailable; a
command that fails returns its status and `reason` (git's own last `fatal:` or error
line, never the command line, which may hold a URL with credentials).
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import git as gitpython
import gitdb.exc

TIMEOUT_SECONDS = 120
Out = TypeVar("Out", str, bytes)


class GitUnavailable(Exception):
    """git could not be started, or did not answer in time."""


@dataclass(frozen=True)
class Answer(Generic[Out]):
    returncode: int
    stdout: Out
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def reason(self) -> str:
        """git's own account of a failure, in one line."""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
        return (fatal or lines or ["no reason given"])[-1][:300]


def run(
    *args: str,
    git_dir: str | Path | None = None,
    cwd: str | Path | None = None,
    stdin: bytes | None = None,
    binary: bool = False,
    env: Mapping[str, str] | None = None,
    timeout: float = TIMEOUT_SECONDS,
) -> Answer:
    """Run `git [--git-dir DIR | -C DIR] ARGS`; the answer whatever its exit status."""
    command = ["git"]
    if git_dir is not None:
        command += ["--git-dir", str(git_dir)]
    if cwd is not None:
        command += ["-C", str(cwd)]
    try:
        proc = subprocess.run(
            [*command, *args],
            input=stdin,
            capture_output=True,
            check=False,
            timeout=timeout,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitUnavailable(f"git could not run: {type(exc).__name__}") from None
    stderr = proc.stderr.decode("utf-8", "replace")
    if binary:
        return Answer(proc.returncode, proc.stdout, stderr)
    return Answer(proc.returncode, proc.stdout.decode("utf-8", "replace"), stderr)


Repository = gitpython.Repo


def repository_at(git_dir: Path) -> Repository:
    """The repository whose git directory is `git_dir` (a bare mirror, say)."""
    return gitpython.Repo(git_dir)


def open_repository(path: Path) -> Repository | None:
    """The non-bare repository whose work tree holds `path`, or None."""
    try:
        repo = gitpython.Repo(path, search_parent_directories=True)
    except (gitpython.InvalidGitRepositoryError, gitpython.NoSuchPathError):
        return None
    if repo.bare or repo.working_tree_dir is None:
        return None
    return repo


class ObjectReader:
    """Objects of one repository through GitPython's long-lived `git cat-file`, one
    request at a time (it is not thread-safe)."""

    def __init__(self, repo: gitpython.Repo) -> None:
        self.repo = repo
        self._lock = threading.Lock()

    def header(self, name: str) -> tuple[str, str, int] | None:
        """(object id, kind, size) of what `name` names, or None."""
        with self._lock:
            try:
                object_id, kind, size = self.repo.git.get_object_header(name)
            except (ValueError, OSError):
                return None
        return _text(object_id), _text(kind), int(size)

    def data(self, name: str) -> tuple[str, str, bytes] | None:
        """(object id, kind, content) of what `name` names, or None."""
        with self._lock:
            try:
                object_id, kind, _, content = self.repo.git.get_object_data(name)
            except (ValueError, OSError):
                return None
        return _text(object_id), _text(kind), content

    def size(self, object_id: str) -> int:
        """An object's size from its header (nothing of it is read); ValueError if absent."""
        with self._lock:
            try:
                return int(self.repo.odb.info(bytes.fromhex(object_id)).size)
            except gitdb.exc.BadObject:
                raise ValueError(object_id) from None

    def blob(self, object_id: str) -> bytes:
        """An object's content; ValueError if absent."""
        with self._lock:
            try:
                return bytes(self.repo.odb.stream(bytes.fromhex(object_id)).read())
            except gitdb.exc.BadObject:
                raise ValueError(object_id) from None

    def file_names(self, commit: str, folder: str) -> list[str] | None:
        """The names of the files directly in `folder` ("" for the top) of `commit`'s
        tree, or None when there is no such folder."""
        with self._lock:
            tree = self.repo.commit(commit).tree
            if folder:
                try:
                    tree = tree / folder
                except KeyError:
                    return None
            return [blob.name for blob in tree.blobs]


def _text(value: str | bytes) -> str:
    """GitPython answers cat-file headers in bytes or str depending on its version."""
    return value.decode() if isinstance(value, bytes) else value
