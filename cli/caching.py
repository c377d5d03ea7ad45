"""Small caching pieces the SDK and the broker are both built on: a bounded memo, a
least-recently-used cache bounded by entries and bytes, and single flight (concurrent
misses of one key share one computation).

It imports nothing of either (only the standard library), so the SDK stays free of the
broker, and the broker can use it without the SDK.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")


class BoundedMemo(Generic[K, V]):
    """Facts about immutable things, at most `max_entries` of them: a full memo is emptied
    and refilled on demand (cheaper than ordering, and right for facts that never go
    stale). Safe to share across threads: each step is one dict operation."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def put(self, key: K, value: V) -> V:
        if len(self._data) >= self.max_entries:
            self._data.clear()
        self._data[key] = value
        return value

    def pop(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()


class LRU(Generic[K, V]):
    """At most `max_entries` values and about `max_bytes` of them (as `size` measures a
    value, or as `put` is told; the newest is kept even if it alone is larger); least
    recently used go first. Safe to share across threads."""

    def __init__(
        self,
        max_entries: int,
        max_bytes: int | None = None,
        size: Callable[[V], int] | None = None,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._size = size or (lambda _: 0)
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0

    def get(self, key: K) -> V | None:
        with self._lock:
            found = self._data.get(key)
            if found is None:
                return None
            self._data.move_to_end(key)
            return found[0]

    def put(self, key: K, value: V, size: int | None = None) -> V:
        weight = self._size(value) if size is None else size
        with self._lock:
            self._drop(key)
            self._data[key] = (value, weight)
            self.bytes += weight
            while len(self._data) > 1 and (
                len(self._data) > self.max_entries
                or (self.max_bytes is not None and self.bytes > self.max_bytes)
            ):
                _, (_, evicted) = self._data.popitem(last=False)
                self.bytes -= evicted
        return value

    def pop(self, key: K) -> None:
        with self._lock:
            self._drop(key)

    def _drop(self, key: K) -> None:
        found = self._data.pop(key, None)
        if found is not None:
            self.bytes -= found[1]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.bytes = 0

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        with self._lock:
            return iter(list(self._data))


class SingleFlight(Generic[T]):
    """Runs one call per key at a time; threads asking meanwhile share its outcome: its
    answer, or a copy of its exception each (a traceback belongs to one thread). If the
    call is interrupted (KeyboardInterrupt, SystemExit), a waiting thread makes its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[Hashable, Future[T | _Interrupted]] = {}

    def run(self, key: Hashable, call: Callable[[], T]) -> T:
        while True:
            with self._lock:
                flight = self._flights.get(key)
                leader = flight is None
                if flight is None:
                    flight = self._flights[key] = Future()
            if leader:
                return self._lead(key, flight, call)
            error = flight.exception()
            if error is not None:
                raise copy.copy(error) from None
            outcome = flight.result()
            if not isinstance(outcome, _Interrupted):
                return outcome

    def _lead(self, key: Hashable, flight: Future[T | _Interrupted], call: Callable[[], T]) -> T:
        # The flight leaves the table before its waiters wake, so a retry starts afresh.
        try:
            answer = call()
        except Exception as exc:
            self._land(key)
            flight.set_exception(exc)
            raise
        except BaseException:
            self._land(key)
            flight.set_result(_Interrupted())
            raise
        self._land(key)
        flight.set_result(answer)
        return answer

    def _land(self, key: Hashable) -> None:
        with self._lock:
            del self._flights[key]


class _Interrupted:
    """The leading call did not finish: the waiters try again themselves."""
