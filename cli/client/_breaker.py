"""The SDK's circuit breaker: after enough consecutive failures, fail fast.

Closed: every call goes through; `threshold` failures in a row open it. Open: calls are
refused at once for `cooldown` seconds; then exactly one trial call is let through while
the others keep being refused, and its outcome closes or reopens the breaker.

Written here rather than taken from pybreaker, which holds its lock for the whole of
each call and so would let only one thread talk to the broker at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Admission:
    """A call the breaker let through; `trial` when it decides the breaker's fate."""

    trial: bool


@dataclass(frozen=True)
class Refusal:
    """Why a call was refused: for the one-line error the caller raises."""

    failures: int
    retry_in: float  # seconds until a trial call may go (0: one is in flight now)


class CircuitBreaker:
    """Thread-safe. `threshold` 0 turns the breaker off (every call is admitted)."""

    def __init__(
        self,
        threshold: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 0 or cooldown < 0:
            raise ValueError("breaker_threshold and breaker_cooldown cannot be negative")
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None  # None: closed
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        """ "closed"; "open" (refusing, cooling down); "half-open" (the cooldown is over:
        the next call, or the one under way, is the trial)."""
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._trial_in_flight or self._clock() - self._opened_at >= self.cooldown:
                return "half-open"
            return "open"

    def admit(self) -> Admission | Refusal:
        """Let a call through, or say why not."""
        with self._lock:
            if self._opened_at is None:
                return Admission(trial=False)
            waited = self._clock() - self._opened_at
            if waited < self.cooldown:
                return Refusal(self._failures, self.cooldown - waited)
            if self._trial_in_flight:
                return Refusal(self._failures, 0.0)
            self._trial_in_flight = True
            return Admission(trial=True)

    def failed(self, admission: Admission) -> None:
        """The call failed the way that counts: unreachable, or 502/503/504 after retries."""
        with self._lock:
            if admission.trial:
                self._trial_in_flight = False
                self._opened_at = self._clock()
                return
            if self._opened_at is not None:
                return  # a straggler from before the breaker opened
            self._failures += 1
            if self.threshold and self._failures >= self.threshold:
                self._opened_at = self._clock()

    def succeeded(self, admission: Admission) -> None:
        """The broker answered (with anything but 502/503/504): the count starts again."""
        with self._lock:
            if admission.trial:
                self._trial_in_flight = False
                self._opened_at = None
            if self._opened_at is None:
                self._failures = 0

    def abandoned(self, admission: Admission) -> None:
        """The call ended without reaching the broker for a reason of its own (a bad URL,
        an interrupt): no verdict, and the next caller may make the trial."""
        if admission.trial:
            with self._lock:
                self._trial_in_flight = False
