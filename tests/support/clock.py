"""A clock a test moves by hand, for what the client times (cache, stale answers, breaker)."""

from __future__ import annotations


class ManualClock:
    """Seconds, as `time.monotonic` gives them, but only `advance` moves them."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
