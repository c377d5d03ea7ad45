"""The child's stdout and stderr through pipes, concealed on the way out.

`MaskedIO` is the `cli.run.process.ChildIO` for masking: the child writes into two pipes, and
one thread passes what arrives on to the CLI's own stdout and stderr, each through its
own `Masker`. Stdin stays the CLI's, so input still reaches the child (but its output
is no terminal: use --no-masking for programs that need one).

When a reader of the CLI's output goes away (`| head -1`), the matching pipe is closed,
so the child gets SIGPIPE on its next write, as it would writing to that reader directly.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from cli.run.mask import Masker

READ_SIZE = 64 * 1024
DRAIN_LIMIT = 1024 * 1024  # on a stop, at most this much more per pipe (a writer may not stop)
STOP_GRACE_SECONDS = 2.0  # finished(): how long a pump stuck writing to a stalled reader gets


@dataclass
class _Stream:
    """One of the child's output pipes and where its concealed text goes."""

    source: IO[bytes]
    target: int
    masker: Masker = field(repr=False)
    open: bool = True

    def pass_on(self, data: bytes) -> None:
        self._write(self.masker.feed(data))

    def finish(self) -> None:
        self._write(self.masker.finish())
        self.open = False

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self.open:
            try:
                view = view[os.write(self.target, view) :]
            except OSError:  # the reader is gone (EPIPE) or the terminal hung up
                self.open = False


class MaskedIO:
    """Pipes for the child's stdout and stderr; `secrets` concealed in both."""

    def __init__(self, secrets: Sequence[bytes], targets: tuple[int, int] = (1, 2)) -> None:
        self._secrets = tuple(secrets)
        self._targets = targets
        self._streams: list[_Stream] = []
        self._thread: threading.Thread | None = None
        self._finished = threading.Event()
        self._stop_r, self._stop_w = -1, -1

    def popen_kwargs(self) -> dict[str, Any]:
        return {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}

    def started(self, process: subprocess.Popen[bytes], wake: Callable[[], None]) -> None:
        assert process.stdout is not None and process.stderr is not None
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # what the CLI itself said comes first
        self._streams = [
            _Stream(source, target, Masker(self._secrets))
            for source, target in zip((process.stdout, process.stderr), self._targets, strict=True)
        ]
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(
            target=self._pump, args=(wake,), name="vanta-masking", daemon=True
        )
        self._thread.start()

    def done(self) -> bool:
        return self._finished.is_set()

    def finished(self) -> None:
        if self._thread is not None:
            if not self._finished.is_set():
                os.write(self._stop_w, b"x")
            self._thread.join(STOP_GRACE_SECONDS)
            if self._thread.is_alive():
                return  # blocked writing to a reader that reads nothing: leave it its fds
        for stream in self._streams:
            stream.source.close()
        for fd in (self._stop_r, self._stop_w):
            if fd != -1:
                os.close(fd)
        self._stop_r = self._stop_w = -1

    def _pump(self, wake: Callable[[], None]) -> None:
        """Until both pipes end (or a stop): read, conceal, write on."""
        selector = selectors.DefaultSelector()
        try:
            for stream in self._streams:
                selector.register(stream.source.fileno(), selectors.EVENT_READ, stream)
            selector.register(self._stop_r, selectors.EVENT_READ, None)
            while any(stream.open for stream in self._streams):
                for key, _ in selector.select():
                    stream = key.data
                    if stream is None:
                        self._drain()
                        return
                    chunk = os.read(key.fd, READ_SIZE)
                    if chunk:
                        stream.pass_on(chunk)
                    else:
                        stream.finish()
                    if not stream.open:
                        selector.unregister(key.fd)
                        stream.source.close()  # a writer now gets EPIPE, as without us
        finally:
            for stream in self._streams:
                if stream.open:
                    stream.finish()
            selector.close()
            self._finished.set()
            wake()

    def _drain(self) -> None:
        """Stopped: pass on what the pipes hold already, not what may come later."""
        for stream in self._streams:
            if not stream.open:
                continue  # ended, or its reader is gone (its pipe is closed)
            fd = stream.source.fileno()
            os.set_blocking(fd, False)
            taken = 0
            while stream.open and taken < DRAIN_LIMIT:
                try:
                    chunk = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    break
                if not chunk:
                    stream.finish()
                    break
                stream.pass_on(chunk)
                taken += len(chunk)
