"""Running the child command: signals relayed to it, its exit status handed back.

Two parts, so masking and named pipes fit without a rewrite:

- `ChildIO` says how the child's stdin/stdout/stderr are connected. `InheritIO` hands
  it the CLI's own; `cli.run.pump.MaskedIO` gives it pipes and passes what comes out
  through a filter on a thread (`started` starts it, `done` says all output is passed
  on, `finished` stops it and releases everything).
- A relay owns the signals for as long as the secrets exist. Enter it before the
  secrets file is written: from then on SIGINT, SIGTERM, SIGHUP (and SIGQUIT, SIGUSR1,
  SIGUSR2) no longer kill the CLI, so the clean-up always runs; a signal that comes
  before the child starts means the child never starts.

On Linux the relay blocks those signals and waits for them with `sigwaitinfo`, which
says who sent each one. A SIGINT or SIGQUIT typed at the terminal (si_code SI_KERNEL)
already reached the whole foreground process group, the child included, so it is not
sent a second time; any signal sent to the CLI itself is forwarded. Elsewhere a
handler forwards every signal.

After the child has exited the relay waits until its output is passed on (something it
left running may still hold the pipes, as with `cmd | cat`); a signal then ends the wait.

A signal the CLI cannot catch (SIGKILL) would leave the child running without it: the
child is started with a parent-death signal (`cli.run.guard.die_with_parent`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol

from cli.run.guard import die_with_parent

FORWARDED = frozenset(
    {
        signal.SIGINT,
        signal.SIGTERM,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
    }
)
KEYBOARD = frozenset({signal.SIGINT, signal.SIGQUIT})  # the terminal sends these to the group
SI_KERNEL = 0x80  # siginfo si_code of a signal the kernel (the terminal driver) sent
HANDLER_POLL_SECONDS = 0.1  # HandlerRelay: how often it looks for a signal while output drains


class ChildIO(Protocol):
    """How the child's standard streams are connected."""

    def popen_kwargs(self) -> dict[str, Any]: ...

    def started(self, process: subprocess.Popen[bytes], wake: Callable[[], None]) -> None:
        """The child runs; `wake` is to be called (from any thread) once `done()` holds."""
        ...

    def done(self) -> bool:
        """Everything the child wrote has been passed on."""
        ...

    def finished(self) -> None:
        """Stop passing output on and release everything (also when never started)."""
        ...


class InheritIO:
    """The child uses the CLI's own stdin, stdout and stderr."""

    def popen_kwargs(self) -> dict[str, Any]:
        return {}

    def started(self, process: subprocess.Popen[bytes], wake: Callable[[], None]) -> None:
        return None

    def done(self) -> bool:
        return True

    def finished(self) -> None:
        return None


def exit_status(returncode: int) -> int:
    """The shell's convention: the child's code, or 128+N when signal N killed it."""
    return 128 - returncode if returncode < 0 else returncode


class SignalRelay(Protocol):
    def __enter__(self) -> SignalRelay: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        io: ChildIO,
        executable: str | None = None,
    ) -> int:
        """Run argv (the program at `executable`, if given) to its end, relaying signals;
        its exit status (see exit_status). The child gets SIGKILL if this process dies.

        Returns 128+N without starting anything if signal N came first. Raises OSError
        when the command cannot be started."""
        ...


class SigwaitRelay:
    """Block the signals; wait for them (and SIGCHLD) with sigwaitinfo. Linux and BSDs."""

    def __init__(self) -> None:
        self._mask = FORWARDED | {signal.SIGCHLD}
        self._saved: set[int | signal.Signals] | None = None
        self._sigchld: Any = None

    def __enter__(self) -> SigwaitRelay:
        self._sigchld = _default_sigchld()
        self._saved = signal.pthread_sigmask(signal.SIG_BLOCK, self._mask)
        return self

    def __exit__(self, *exc_info: object) -> None:
        while signal.sigtimedwait(self._mask, 0) is not None:
            pass  # the child is gone: nothing left to relay them to
        assert self._saved is not None
        signal.pthread_sigmask(signal.SIG_SETMASK, self._saved)
        signal.signal(signal.SIGCHLD, self._sigchld)

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        io: ChildIO,
        executable: str | None = None,
    ) -> int:
        early = FORWARDED & signal.sigpending()
        if early:
            first = min(early)
            while signal.sigtimedwait(FORWARDED, 0) is not None:
                pass
            return 128 + first
        saved = self._saved or set()
        tie = die_with_parent(os.getpid())

        def child_setup() -> None:
            # the child must not inherit our blocked signals (Popen has no sigmask argument)
            signal.pthread_sigmask(signal.SIG_SETMASK, saved)
            if tie is not None:
                tie()

        try:
            process = subprocess.Popen(
                list(argv),
                executable=executable,
                env=dict(env),
                preexec_fn=child_setup,
                **io.popen_kwargs(),
            )
        except BaseException:
            io.finished()
            raise
        waiter = threading.get_ident()
        try:
            # SIGCHLD is what sigwaitinfo below waits for anyway: "something ended, look again"
            io.started(process, lambda: signal.pthread_kill(waiter, signal.SIGCHLD))
            while process.poll() is None:
                info = signal.sigwaitinfo(self._mask)
                if info.si_signo == signal.SIGCHLD:
                    continue
                if info.si_signo in KEYBOARD and info.si_code == SI_KERNEL:
                    continue  # typed at the terminal: the child got it too
                process.send_signal(info.si_signo)
            while not io.done():
                if signal.sigwaitinfo(self._mask).si_signo != signal.SIGCHLD:
                    break  # the child is gone: a signal means stop waiting for its output
        finally:
            if process.returncode is None:  # an error in this loop: do not leave it behind
                process.kill()
                process.wait()
            io.finished()
        return exit_status(process.returncode)


class HandlerRelay:
    """Forward every signal from a handler. For platforms without sigwaitinfo (macOS)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._early: list[int] = []
        self._late = False  # a signal came after the child had exited
        self._woken = threading.Event()
        self._saved: dict[signal.Signals, Any] = {}

    def __enter__(self) -> HandlerRelay:
        self._saved[signal.SIGCHLD] = _default_sigchld()
        for signo in FORWARDED:
            self._saved[signo] = signal.signal(signo, self._on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signo, handler in self._saved.items():
            signal.signal(signo, handler)

    def _on_signal(self, signo: int, frame: object) -> None:
        if self._process is None:
            self._early.append(signo)
        elif self._process.returncode is None:
            self._process.send_signal(signo)
        else:
            self._late = True

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        io: ChildIO,
        executable: str | None = None,
    ) -> int:
        if self._early:
            return 128 + self._early[0]
        try:
            process = subprocess.Popen(
                list(argv),
                executable=executable,
                env=dict(env),
                preexec_fn=die_with_parent(os.getpid()),
                **io.popen_kwargs(),
            )
        except BaseException:
            io.finished()
            raise
        self._process = process
        for signo in self._early:  # came between Popen and the line above
            process.send_signal(signo)
        try:
            io.started(process, self._woken.set)
            process.wait()
            # a handler must not take the Event's lock (it may interrupt its holder): poll
            while not io.done() and not self._late:
                self._woken.wait(HANDLER_POLL_SECONDS)
        finally:
            if process.returncode is None:
                process.kill()
                process.wait()
            io.finished()
        return exit_status(process.returncode)


def _default_sigchld() -> Any:
    """Set SIGCHLD to its default, returning the old handler. Started with it ignored
    (some supervisors do that), the kernel would reap the child and lose its status."""
    return signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def signal_relay() -> SignalRelay:
    """The best relay this platform has."""
    if hasattr(signal, "sigwaitinfo") and hasattr(signal, "pthread_sigmask"):
        return SigwaitRelay()
    return HandlerRelay()
