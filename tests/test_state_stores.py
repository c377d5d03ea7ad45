"""Token state behind one interface: SQLite for one broker, Redis for several."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from support.brokers import start_broker, stop_broker
from support.tokens import bearer, make_token

from broker.errors import StateUnavailable
from broker.state.redis import RedisTokenState
from broker.state.sqlite import MintedToken, SqliteTokenState


@pytest.fixture(params=["sqlite", "redis"])
def token_state(request, tmp_path):
    if request.param == "sqlite":
        return SqliteTokenState(tmp_path / "state.db")
    return RedisTokenState(request.getfixturevalue("redis_server").url)


def test_use_one_stops_exactly_at_the_limit_under_threads(token_state):
    expires = int(time.time()) + 600
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: token_state.use_one("j1", 7, expires), range(40)))
    assert results.count(True) == 7 and token_state.used("j1") == 7


def test_give_back_returns_one_use(token_state):
    expires = int(time.time()) + 600
    assert token_state.use_one("j2", 1, expires)
    assert not token_state.use_one("j2", 1, expires)
    token_state.give_back("j2")
    assert token_state.use_one("j2", 1, expires)


def test_revocations_and_minted_scopes_are_remembered(token_state):
    expires = int(time.time()) + 600
    assert not token_state.is_revoked("j3")
    token_state.revoke("j3", expires)
    assert token_state.is_revoked("j3")
    token_state.record_minted(MintedToken("j4", "prod", "DB_*", expires))
    assert token_state.minted("j4") == MintedToken("j4", "prod", "DB_*", expires)
    assert token_state.minted("nope") is None


def test_a_revocation_in_one_process_is_seen_at_once_by_another(tmp_path):
    """Each process remembers revocations; a new one elsewhere is reread before the next
    check (a shared counter says so), not after some cache time."""
    here, there = SqliteTokenState(tmp_path / "state.db"), SqliteTokenState(tmp_path / "state.db")
    expires = int(time.time()) + 600
    assert not here.is_revoked("j7") and not there.is_revoked("j7")
    there.revoke("j7", expires)
    assert here.is_revoked("j7")
    there.revoke("j8", expires)
    assert here.is_revoked("j8") and here.is_revoked("j7") and not here.is_revoked("j9")


def test_the_state_files_are_readable_by_their_owner_only(tmp_path):
    path = tmp_path / "state" / "broker.db"
    path.parent.mkdir()
    path.touch(mode=0o644)  # as an earlier version left it
    state = SqliteTokenState(path)
    state.use_one("j10", 3, int(time.time()) + 600)
    state.revoke("j10", int(time.time()) + 600)
    files = sorted(path.parent.iterdir())
    assert {f.name for f in files} >= {"broker.db", "broker.db-wal", "broker.db-epochs"}
    assert {f.name: f.stat().st_mode & 0o777 for f in files} == {f.name: 0o600 for f in files}


def test_redis_unreachable_fails_closed_then_recovers(redis_server):
    state = RedisTokenState(redis_server.url, timeout_seconds=0.5)
    state.ping()
    redis_server.stop()
    with pytest.raises(StateUnavailable):
        state.use_one("j5", 1, int(time.time()) + 600)
    redis_server.start()
    assert state.use_one("j5", 1, int(time.time()) + 600)


def test_redis_state_expires_an_hour_after_the_token(redis_server):
    import redis

    expires = int(time.time()) + 60
    RedisTokenState(redis_server.url).use_one("j6", 3, expires)
    ttl = redis.Redis.from_url(redis_server.url).ttl("vanta:usage:j6")
    assert 3600 < ttl <= 3660


def test_usage_limit_is_exact_across_two_brokers_on_one_redis(config, tmp_path, redis_server):
    env = {"VANTA_STATE_URL": redis_server.url}
    brokers = [start_broker(config, tmp_path, extra_env=env) for _ in range(2)]
    try:
        token = make_token(config, environment="dev", usage_limit=10)

        def fetch(i: int) -> int:
            url = f"{brokers[i % 2].url}/api/v1/vault/dev/DATABASE_URL"
            return requests.get(url, headers=bearer(token), timeout=30).status_code

        with ThreadPoolExecutor(max_workers=48) as pool:
            statuses = list(pool.map(fetch, range(48)))
        assert statuses.count(200) == 10 and statuses.count(403) == 38
    finally:
        for broker in brokers:
            stop_broker(broker)


def test_broker_answers_503_while_redis_is_down_and_recovers(config, tmp_path, redis_server):
    broker = start_broker(config, tmp_path, extra_env={"VANTA_STATE_URL": redis_server.url})
    try:
        token = make_token(config, environment="dev")
        url = f"{broker.url}/api/v1/vault/dev/DATABASE_URL"
        assert requests.get(url, headers=bearer(token), timeout=10).status_code == 200
        redis_server.stop()
        r = requests.get(url, headers=bearer(token), timeout=10)
        assert r.status_code == 503 and r.json()["error"]["code"] == "state_unavailable"
        assert "postgres" not in r.text
        ready = requests.get(f"{broker.url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["failing"] == ["state"]
        redis_server.start()
        assert requests.get(url, headers=bearer(token), timeout=10).status_code == 200
        assert requests.get(f"{broker.url}/readyz", timeout=10).status_code == 200
    finally:
        stop_broker(broker)
