"""What keeps run-with-secrets' secrets from outliving it, or leaking out of it.

- `make_undumpable()`: the CLI holds VANTA_TOKEN (the power to mint) in its environment
  and memory. Once non-dumpable, its /proc files (environ, mem, ...) belong to root and
  no process without CAP_SYS_PTRACE, the command included, can read them or attach to it.
- `die_with_parent(pid)`: a `preexec_fn` that gives the command a parent-death signal,
  SIGKILL, so that a CLI killed with SIGKILL (which it cannot catch or forward) leaves no
  orphan. SIGKILL rather than SIGTERM: it fires only when the CLI died without handing a
  signal on, so nobody is left to wait for a graceful exit, and a command that catches or
  ignores SIGTERM would live on. The kernel clears the setting when the command executes a
  set-user-ID or set-group-ID program or changes its credentials (sudo, setpriv): such a
  command is not tied to the CLI; nor are the command's own children.
- `LeftoverGuard`: a small process, started in a session of its own, that holds the read
  end of a pipe only the CLI can write to. When the CLI ends, however it ends (SIGKILL
  included), the guard reads end-of-file and removes the private directory of the secrets
  file. Normally the CLI removed it already and the guard finds nothing to do. What it
  cannot survive is being killed itself together with the CLI (a `kill -9` of every
  process of the user or of the cgroup): the file then stays in the private 0700
  directory, under `$XDG_RUNTIME_DIR` (a tmpfs, emptied at log-out) when there is one.

Linux only (prctl); elsewhere the first two do nothing and the guard still cleans up.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
DEATH_SIGNAL = signal.SIGKILL
RELEASE_WAIT_SECONDS = 5.0

# Run with -I -S: no PYTHON* variables, no site-packages, only the standard library.
_GUARD_CODE = (
    "import shutil, sys\n"
    "sys.stdin.buffer.read()\n"  # end-of-file: the CLI is gone, or done
    "shutil.rmtree(sys.argv[1], ignore_errors=True)\n"
)


class GuardError(Exception):
    """The CLI cannot protect itself (one line, no secret)."""


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl


def make_undumpable() -> None:
    """Make this process non-dumpable (Linux). Raises GuardError if the kernel refuses."""
    prctl = _prctl()
    if prctl is not None and prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        reason = os.strerror(ctypes.get_errno())
        raise GuardError(f"cannot make the CLI non-dumpable (prctl): {reason}")


def die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """What the forked child runs before exec (a `preexec_fn`): SIGKILL when its parent
    dies. None where there is no such thing (not Linux).

    Between fork and exec other threads of the parent (the fifo server) may have held
    locks: everything is looked up before the fork, and the child only calls a C
    function and two system calls. If the parent died before the setting took hold, the
    child is already an orphan and kills itself."""
    prctl = _prctl()
    if prctl is None:
        return None

    def setup() -> None:
        prctl(PR_SET_PDEATHSIG, DEATH_SIGNAL, 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), DEATH_SIGNAL)

    return setup


class LeftoverGuard:
    """Removes `directory` once this process ends or `release()` is called."""

    def __init__(self, directory: Path) -> None:
        read_end, self._write_end = os.pipe()  # both close-on-exec: no other process holds them
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _GUARD_CODE, str(directory)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # no terminal signals, no kill of our process group
            )
        except OSError:
            os.close(self._write_end)
            raise
        finally:
            os.close(read_end)

    def release(self) -> None:
        """The directory is gone (or going): let the guard finish, and reap it."""
        if self._write_end == -1:
            return
        os.close(self._write_end)
        self._write_end = -1
        try:
            self.process.wait(RELEASE_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            pass  # still starting on a loaded machine: it ends by itself, init reaps it
