"""`--inject-as fifo`: the secrets text (dotenv, JSON or YAML) served through a named pipe,
never written to disk.

The pipe (0600) sits in a private directory (0700) and VANTA_SECRETS_FILE names it. A
thread opens it for writing, which blocks until a reader opens it; each such open is
one read. As soon as a reader is connected the path is given a fresh FIFO (or, after the
last allowed read, removed), so a reader that keeps the old one open never gets a second
copy and one that comes too late finds nothing. The text lives only in the kernel's pipe
buffer on its way to the reader.

Leaving the injection stops the thread (a read end opened by us wakes a blocked open, a
byte on a stop pipe wakes a blocked write) and removes the directory.
"""

from __future__ import annotations

import os
import select
import threading
from pathlib import Path

from cli.run.formats import FILE_NAMES, render
from cli.run.inject import FORMAT_NAMES, SECRETS_FILE_VAR, InjectionError, PrivateDirectory
from cli.run.injected import InjectedVar

FIFO_MODE = 0o600
NEXT_NAME = ".next"  # where the next reader's FIFO is made before it is renamed into place


class FifoInjection:
    """A named pipe at VANTA_SECRETS_FILE that gives the text (dotenv, json or yaml)
    `max_reads` times."""

    def __init__(
        self,
        variables: tuple[InjectedVar, ...],
        max_reads: int = 1,
        parent: str | None = None,
        fmt: str = "dotenv",
    ) -> None:
        if max_reads < 1:
            raise ValueError("max_reads must be at least 1")
        self.variables = variables
        self.max_reads = max_reads
        self.parent = parent
        self.fmt = fmt
        self.file_name = FILE_NAMES[fmt]
        kind = "" if fmt == "dotenv" else f"{FORMAT_NAMES[fmt]}, "
        self.how = (
            f"through a named pipe at ${SECRETS_FILE_VAR} "
            f"({kind}{max_reads} read{'s' if max_reads > 1 else ''})"
        )
        self.directory: PrivateDirectory | None = None
        self.reads = 0  # readers served so far
        self._lock = threading.Lock()  # the path changes and the stop decision, one at a time
        self._stopping = False
        self._stop_r = self._stop_w = -1
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> Path | None:
        return None if self.directory is None else self.directory.path / self.file_name

    def __enter__(self) -> dict[str, str]:
        content = render(((var.name, var.value) for var in self.variables), self.fmt).encode()
        try:
            self.directory = PrivateDirectory(self.parent)
            self._make_fifo(self.directory.path / self.file_name)
            self._stop_r, self._stop_w = os.pipe()
        except OSError as exc:
            self._remove()
            raise InjectionError(f"cannot make the named pipe: {exc.strerror}") from None
        self._thread = threading.Thread(
            target=self._serve, args=(content,), name="vanta-fifo", daemon=True
        )
        self._thread.start()
        return {SECRETS_FILE_VAR: str(self.path)}

    def __exit__(self, *exc_info: object) -> None:
        self._stop()
        self._remove()

    def _make_fifo(self, path: Path) -> None:
        """A FIFO at `path`, 0600 whatever the umask (made aside, then renamed in place)."""
        assert self.directory is not None
        aside = self.directory.path / NEXT_NAME
        os.mkfifo(aside, FIFO_MODE)
        os.chmod(aside, FIFO_MODE)  # a umask such as 0o200 would leave it unwritable
        os.rename(aside, path)

    def _serve(self, content: bytes) -> None:
        path = self.path
        assert path is not None
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)  # waits for a reader
            except OSError:
                return  # the directory is gone
            try:
                with self._lock:
                    if self._stopping:
                        return  # woken by _stop, or a reader came too late: nothing for it
                    self.reads += 1
                    last = self.reads >= self.max_reads
                    if last:
                        os.unlink(path)
                    else:
                        self._make_fifo(path)  # the next reader gets a fresh one
                self._write(fd, content)
            except OSError:
                return  # cannot make the next FIFO: no further reads
            finally:
                os.close(fd)
            if last:
                return

    def _write(self, fd: int, content: bytes) -> None:
        """All of `content` to the reader, unless it leaves or _stop comes first."""
        os.set_blocking(fd, False)
        view = memoryview(content)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                readable, _, _ = select.select([self._stop_r], [fd], [])
                if readable:
                    return
            except BrokenPipeError:
                return  # the reader closed early: that was its read

    def _stop(self) -> None:
        if self._thread is None:
            return
        waker = -1
        with self._lock:
            self._stopping = True
            path = self.path
            if self.reads < self.max_reads and path is not None:
                try:  # the server blocks opening this very FIFO for writing: be its reader
                    waker = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                except OSError:
                    pass
        os.write(self._stop_w, b"x")
        self._thread.join()
        self._thread = None
        if waker != -1:
            os.close(waker)

    def _remove(self) -> None:
        for fd in (self._stop_r, self._stop_w):
            if fd != -1:
                os.close(fd)
        self._stop_r = self._stop_w = -1
        if self.directory is not None:
            self.directory.remove()
            self.directory = None
