"""Running the child command: signals relayed to it, its exit status handed back.

Two parts, so SPEC §14 fits without a rewrite:

- `ChildIO` says how the child's stdin/stdout/stderr are connected. `InheritIO` hands
  it the CLI's own; masking will be a ChildIO that gives it pipes and pumps them
  through a filter on threads (`started` starts them, `finished` drains them).
- A relay owns the signals for as long as the secrets exist. Enter it before the
  secrets file is written: from then on SIGINT, SIGTERM, SIGHUP (and SIGQUIT, SIGUSR1,
  SIGUSR2) no longer kill the CLI, so the clean-up always runs; a signal that comes
  before the child starts means the child never starts.

On Linux the relay blocks those signals and waits for them with `sigwaitinfo`, which
says who sent each one. A SIGINT or SIGQUIT typed at the terminal (si_code SI_KERNEL)
already reached the whole foreground process group, the child included, so it is not
sent a second time; any signal sent to the CLI itself is forwarded. Elsewhere a
handler forwards every signal.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol

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


class ChildIO(Protocol):
    """How the child's standard streams are connected."""

    def popen_kwargs(self) -> dict[str, Any]: ...

    def started(self, process: subprocess.Popen[bytes]) -> None: ...

    def finished(self) -> None: ...


class InheritIO:
    """The child uses the CLI's own stdin, stdout and stderr."""

    def popen_kwargs(self) -> dict[str, Any]:
        return {}

    def started(self, process: subprocess.Popen[bytes]) -> None:
        return None

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

    def run(self, argv: Sequence[str], env: Mapping[str, str], io: ChildIO) -> int:
        """Run argv to its end, relaying signals; its exit status (see exit_status).

        Returns 128+N without starting anything if signal N came first. Raises OSError
        when the command cannot be started."""
        ...


class SigwaitRelay:
    """Block the signals; wait for them (and SIGCHLD) with sigwaitinfo. Linux and BSDs."""

    def __init__(self) -> None:
        self._mask = FORWARDED | {signal.SIGCHLD}
        self._saved: set[signal.Signals] | None = None
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

    def run(self, argv: Sequence[str], env: Mapping[str, str], io: ChildIO) -> int:
        early = FORWARDED & signal.sigpending()
        if early:
            first = min(early)
            while signal.sigtimedwait(FORWARDED, 0) is not None:
                pass
            return 128 + first
        saved = self._saved or set()
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            # the child must not inherit our blocked signals (Popen has no sigmask argument)
            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, saved),
            **io.popen_kwargs(),
        )
        io.started(process)
        try:
            while process.poll() is None:
                info = signal.sigwaitinfo(self._mask)
                if info.si_signo == signal.SIGCHLD:
                    continue
                if info.si_signo in KEYBOARD and info.si_code == SI_KERNEL:
                    continue  # typed at the terminal: the child got it too
                process.send_signal(info.si_signo)
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
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signo)
        else:
            self._early.append(signo)

    def run(self, argv: Sequence[str], env: Mapping[str, str], io: ChildIO) -> int:
        if self._early:
            return 128 + self._early[0]
        process = subprocess.Popen(list(argv), env=dict(env), **io.popen_kwargs())
        self._process = process
        for signo in self._early:  # came between Popen and the line above
            process.send_signal(signo)
        io.started(process)
        try:
            process.wait()
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
