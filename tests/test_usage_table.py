"""The usage table: counts of limited tokens shared by a broker's worker processes."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from broker.state.sqlite import SqliteTokenState
from broker.state.table import RETENTION_SECONDS, Overflow, UsageTable, table_path


def _hammer(path: str, jti: str, limit: int, tries: int) -> int:
    state = SqliteTokenState(Path(path))
    expires = int(time.time()) + 600
    with ThreadPoolExecutor(max_workers=4) as pool:
        return sum(pool.map(lambda _: state.use_one(jti, limit, expires), range(tries)))


def test_a_limit_is_exact_across_processes_and_threads(tmp_path):
    path = str(tmp_path / "state.db")
    SqliteTokenState(Path(path))
    with ProcessPoolExecutor(max_workers=3) as pool:
        granted = sum(pool.map(_hammer, [path] * 3, ["j1"] * 3, [250] * 3, [200] * 3))
    assert granted == 250 and SqliteTokenState(Path(path)).used("j1") == 250


def test_counts_survive_a_restart_and_uses_given_back_return(tmp_path):
    expires = int(time.time()) + 600
    first = SqliteTokenState(tmp_path / "state.db")
    assert first.use_one("j2", 2, expires) and first.use_one("j2", 2, expires)
    again = SqliteTokenState(tmp_path / "state.db")
    assert not again.use_one("j2", 2, expires) and again.used("j2") == 2
    again.give_back("j2")
    assert first.use_one("j2", 2, expires) and not first.use_one("j2", 2, expires)


def test_counts_kept_in_sqlite_before_the_table_existed_still_hold(tmp_path):
    path = tmp_path / "state.db"
    SqliteTokenState(path)
    table_path(path).unlink()  # as a broker of the previous version left its state
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO usage VALUES ('old', 3, ?)", (int(time.time()) + 600,))
    state = SqliteTokenState(path)
    assert not state.use_one("old", 3, int(time.time()) + 600)
    assert state.used("old") == 3
    assert state.use_one("new", 1, int(time.time()) + 600)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _small_table(tmp_path: Path, clock: FakeClock) -> tuple[UsageTable, SqliteTokenState]:
    state = SqliteTokenState(tmp_path / "state.db")
    overflow = Overflow(
        state._sql_use_one, state._sql_give_back, state._sql_used, state._sql_holds, lambda: 0
    )
    return UsageTable(tmp_path / "small-usage", overflow, clock=clock, slots=4), state


def test_a_token_the_table_has_no_room_for_is_counted_in_sqlite_exactly(tmp_path):
    clock = FakeClock()
    table, state = _small_table(tmp_path, clock)
    expires = int(clock.now) + 600
    for n in range(4):
        assert table.use_one(f"t{n}", 5, expires)
    for _ in range(3):
        assert table.use_one("spilled", 3, expires)
    assert not table.use_one("spilled", 3, expires)
    assert state._sql_used("spilled") == 3 and table.used("spilled") == 3
    table.give_back("spilled")
    assert table.use_one("spilled", 3, expires) and not table.use_one("spilled", 3, expires)


def test_a_long_expired_tokens_slot_is_taken_over(tmp_path):
    clock = FakeClock()
    table, state = _small_table(tmp_path, clock)
    for n in range(4):
        assert table.use_one(f"t{n}", 1, int(clock.now) + 60)
    clock.now += 60 + RETENTION_SECONDS + 1
    assert table.use_one("fresh", 1, int(clock.now) + 60)
    assert state._sql_used("fresh") == 0  # in the table, not spilled
    assert table.used("fresh") == 1 and not table.use_one("fresh", 1, int(clock.now) + 60)
