"""The SDK's answer cache and the single flight that keeps threads from
asking the broker the same question at once.

An answer younger than `ttl` is served without a request (so without using one of a
limited token's uses); one up to `max_stale` old is kept for when the broker is down.
Ages count from when the answer was fetched. Thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from cli.caching import LRU

T = TypeVar("T")

MAX_ENTRIES = 4096  # least recently used answers go first past this


@dataclass(frozen=True)
class Cached(Generic[T]):
    answer: T = field(repr=False)
    fetched_at: float


class AnswerCache(Generic[T]):
    """Answers by request; `ttl` 0 keeps nothing."""

    def __init__(
        self,
        ttl: float,
        max_stale: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        if ttl < 0 or max_stale < 0:
            raise ValueError("cache_ttl and max_stale cannot be negative")
        self.ttl = ttl
        self.max_stale = max_stale
        self._clock = clock
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: LRU[Hashable, Cached[T]] = LRU(max_entries)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def fresh(self, key: Hashable) -> T | None:
        """The answer if it was fetched less than `ttl` ago."""
        entry = self._entry(key, self.ttl, inclusive=False)
        return None if entry is None else entry.answer

    def stale(self, key: Hashable) -> Cached[T] | None:
        """The entry if it was fetched at most `max_stale` ago (for when the broker fails)."""
        return self._entry(key, self.max_stale, inclusive=True)

    def age(self, entry: Cached[T]) -> float:
        return self._clock() - entry.fetched_at

    def put(self, key: Hashable, answer: T) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._entries.put(key, Cached(answer, self._clock()))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _entry(self, key: Hashable, limit: float, inclusive: bool) -> Cached[T] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            age = self._clock() - entry.fetched_at
            if age > max(self.ttl, self.max_stale):
                self._entries.pop(key)  # of no use any more
                return None
            if age < limit or (inclusive and age <= limit):
                return entry  # (get has made it the most recently used)
            return None
