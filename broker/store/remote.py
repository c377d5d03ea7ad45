"""Following a Git remote safely: a bare mirror, fast-forwards only, and
optionally only commits signed by an allowed SSH signer.

The commit being served is the ref `refs/vanta/served` of the mirror in
VANTA_GIT_CACHE. Every worker reads it (a GitTree re-resolves a ref when its file
changes), so all workers switch together, and it survives restarts. Syncs take an
exclusive flock on the cache, so workers and brokers on one cache never race.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from broker.errors import NotFound, TreeUnavailable
from broker.store.git import Answer, GitUnavailable, repository_at
from broker.store.git import run as run_git
from broker.store.tree import GitTree, Snapshot

log = logging.getLogger("vanta.remote")

SERVED_REF = "refs/vanta/served"
FETCHED_REF = "refs/vanta/fetched"
REFUSED_REF = "refs/vanta/refused"  # the last refused tip, so a poll reports it once


@dataclass(frozen=True)
class SyncOutcome:
    """After a sync: the commit served, and why a fetched commit was refused, if it was."""

    version: str | None
    refused: str | None = None  # "non_fast_forward" | "unsigned_commit"
    refused_commit: str | None = None
    first_refusal: bool = False  # not refused before (the poll reports only these)
    failed: bool = False  # the remote could not be fetched


class MirrorError(Exception):
    """The mirror cannot be set up; the message names no URL or credential."""


class RemoteMirror:
    def __init__(
        self, url: str, branch: str, cache_dir: Path, allowed_signers: Path | None = None
    ) -> None:
        self.url = url
        self.branch = branch
        self.cache_dir = cache_dir
        self.git_dir = cache_dir / "mirror.git"
        self.allowed_signers = allowed_signers
        self._ensure()

    def _git(self, *args: str) -> Answer:
        """git's answer; one that could not run is a failure like any other (fail closed)."""
        try:
            return run_git(*args, git_dir=self.git_dir)
        except GitUnavailable as exc:
            return Answer(1, "", str(exc))

    def _ensure(self) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._flock():
            if not (self.git_dir / "HEAD").exists():
                try:
                    created = run_git("init", "--quiet", "--bare", str(self.git_dir)).ok
                except GitUnavailable:
                    created = False
                if not created:
                    raise MirrorError("cannot create the Git mirror in VANTA_GIT_CACHE")
            # Set once at start-up; every fetch names `origin`, so the URL (which may carry
            # credentials) is in no later command line, log line or exception text.
            if self._git("config", "remote.origin.url", self.url).returncode != 0:
                raise MirrorError("cannot configure the Git mirror in VANTA_GIT_CACHE")

    def _flock(self, blocking: bool = True):
        return _FileLock(self.cache_dir / "sync.lock", blocking)

    def _rev(self, ref: str) -> str | None:
        proc = self._git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        return proc.stdout.strip() or None if proc.returncode == 0 else None

    def served_commit(self) -> str | None:
        return self._rev(SERVED_REF)

    def sync(self, blocking: bool = True) -> SyncOutcome | None:
        """Fetch, then serve the fetched tip if it may be served. None if another sync
        holds the lock and `blocking` is False."""
        lock = self._flock(blocking)
        if not lock.acquire():
            return None
        try:
            return self._sync_locked()
        finally:
            lock.release()

    def _sync_locked(self) -> SyncOutcome:
        served = self.served_commit()
        fetch = self._git(
            "fetch",
            "--quiet",
            "--no-tags",
            "--force",
            "origin",
            f"+refs/heads/{self.branch}:{FETCHED_REF}",
        )
        if fetch.returncode != 0:
            log.error("git fetch from the remote failed (exit %d)", fetch.returncode)
            return SyncOutcome(served, failed=True)
        tip = self._rev(FETCHED_REF)
        if tip is None or tip == served:
            return SyncOutcome(served)
        refusal = self._refusal(served, tip)
        if refusal is not None:
            first = self._rev(REFUSED_REF) != tip
            self._git("update-ref", REFUSED_REF, tip)
            log.warning("refused commit %s from the remote: %s", tip[:12], refusal)
            return SyncOutcome(served, refusal, tip, first_refusal=first)
        # Compare-and-swap: the ref moves only from the commit we checked against.
        update = self._git("update-ref", SERVED_REF, tip, served or "")
        if update.returncode != 0:
            return SyncOutcome(self.served_commit(), failed=True)
        log.info("now serving commit %s", tip[:12])
        return SyncOutcome(tip)

    def _refusal(self, served: str | None, tip: str) -> str | None:
        if served is not None:
            if self._git("merge-base", "--is-ancestor", served, tip).returncode != 0:
                return "non_fast_forward"
        if self.allowed_signers is not None:
            if served is None:
                span = [tip]
            else:
                listed = self._git("rev-list", f"{served}..{tip}")
                if listed.returncode != 0:
                    return "unsigned_commit"  # the new commits cannot be checked: refuse
                span = listed.stdout.split()
            for sha in span:
                if not self._signed_by_allowed_signer(sha):
                    return "unsigned_commit"
        return None

    def _signed_by_allowed_signer(self, sha: str) -> bool:
        proc = self._git(
            "-c",
            f"gpg.ssh.allowedSignersFile={self.allowed_signers}",
            "verify-commit",
            sha,
        )
        return proc.returncode == 0


class _FileLock:
    def __init__(self, path: Path, blocking: bool) -> None:
        self.path = path
        self.blocking = blocking
        self._fd: int | None = None

    def acquire(self) -> bool:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            return False
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> _FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RemoteTree(GitTree):
    """The tree at the mirror's served ref; 503 until a first commit is served."""

    def __init__(self, mirror: RemoteMirror, subdir: str) -> None:
        super().__init__(repository_at(mirror.git_dir), subdir.strip("/"), SERVED_REF)
        self.mirror = mirror

    def served(self) -> Snapshot:
        try:
            return super().served()
        except NotFound:
            raise TreeUnavailable() from None


class Poller:
    """Syncs every `interval` seconds in a daemon thread; `on_sync` hears of each sync."""

    def __init__(
        self, mirror: RemoteMirror, interval: int, on_sync: Callable[[SyncOutcome], None]
    ) -> None:
        self.mirror = mirror
        self.interval = interval
        self.on_sync = on_sync
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vanta-git-poll", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                outcome = self.mirror.sync(blocking=False)
            except OSError:  # git's own failures come back as answers
                log.error("git poll failed")
                continue
            if outcome is not None:
                self.on_sync(outcome)
