"""The caching pieces the SDK and the broker share."""

from __future__ import annotations

import threading

import pytest

from cli.caching import LRU, BoundedMemo, SingleFlight


def test_concurrent_misses_share_one_call_and_each_waiter_gets_its_own_exception():
    flights: SingleFlight[int] = SingleFlight()
    entered, release = threading.Event(), threading.Event()
    calls = []

    def slow_failure() -> int:
        calls.append(1)
        entered.set()
        release.wait(10)
        raise ValueError("broker down")

    caught: list[BaseException] = []

    def ask() -> None:
        try:
            flights.run("k", slow_failure)
        except ValueError as exc:
            caught.append(exc)

    leader = threading.Thread(target=ask)
    leader.start()
    assert entered.wait(10)
    waiters = [threading.Thread(target=ask) for _ in range(3)]
    for thread in waiters:
        thread.start()
    release.set()
    for thread in [leader, *waiters]:
        thread.join(10)
    assert len(calls) == 1 and len(caught) == 4
    assert len({id(exc) for exc in caught}) == 4  # a traceback belongs to one thread
    assert flights.run("k", lambda: 7) == 7  # the failed flight landed: a new one starts


def test_lru_is_bounded_by_entries_and_bytes_and_keeps_the_newest():
    lru: LRU[str, str] = LRU(max_entries=3, max_bytes=10, size=len)
    for key in "abc":
        lru.put(key, key * 3)
    assert lru.get("a") == "aaa" and lru.bytes == 9
    lru.put("d", "dd")  # over 10 bytes: the least recently used (b) goes
    assert "b" not in lru and list(lru) == ["c", "a", "d"]
    lru.put("e", "e" * 50)
    assert list(lru) == ["e"] and lru.bytes == 50


@pytest.mark.parametrize("size", [1, 3])
def test_a_full_memo_is_emptied_and_refilled(size):
    memo: BoundedMemo[int, int] = BoundedMemo(size)
    for i in range(size + 1):
        memo.put(i, i)
    assert len(memo) == 1 and memo.get(size) == size
