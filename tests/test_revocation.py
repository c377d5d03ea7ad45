"""Revoking tokens (SPEC §10): by jti within the caller's scope, or oneself; effective on
every worker and every broker from the next request; state kept, then pruned."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from support.brokers import read_audit, start_broker, stop_broker
from support.tokens import bearer, make_token

from broker.config import Config
from broker.scope import PERMISSIONS, Scope
from broker.state.sqlite import RETENTION_SECONDS, MintedToken, SqliteTokenState
from broker.tokens.claims import MintRequest, mint
from broker.web.app import create_app

ISSUE = ("secrets:read", "secrets:list", "tokens:issue")
REVOKE = "/api/v1/vault/tokens/revoke"
REVOKE_SELF = "/api/v1/vault/tokens/revoke-self"
READ = "/api/v1/vault/{env}/{key}"


@pytest.fixture(params=["sqlite", "redis"])
def state_client(request, config: Config) -> Iterator:
    """A broker app on each token-state backend (the same interface)."""
    if request.param == "sqlite":
        yield create_app(config).test_client()
        return
    from broker.state.redis import RedisTokenState

    server = request.getfixturevalue("redis_server")
    yield create_app(config, state=RedisTokenState(server.url)).test_client()


def mint_child(client, issuer: str, **wanted) -> tuple[str, str]:
    body = {"subject": "child", "environment": "dev", "key_pattern": "DATABASE_URL", **wanted}
    r = client.post("/api/v1/vault/tokens/generate", json=body, headers=bearer(issuer))
    assert r.status_code == 201, r.get_json()
    return r.get_json()["access_token"], r.get_json()["scope_details"]["jti"]


def offline_token(config: Config, **scope) -> tuple[str, str]:
    """A token signed with the key but never minted by the broker, and its jti."""
    wanted = {"environment": "*", "key_pattern": "*", "permissions": PERMISSIONS, **scope}
    request = MintRequest("offline", Scope(**wanted), 15, None)
    token, claims = mint(
        request, config.keyring, issuer=config.jwt_issuer, audience=config.jwt_audience
    )
    return token, claims.jti


def revoke(client, caller: str, body) -> object:
    return client.post(REVOKE, json=body, headers=bearer(caller))


def error_code(response) -> str:
    return response.get_json()["error"]["code"]


# -- revoke by jti -----------------------------------------------------------------------


def test_revoking_a_minted_token_refuses_it_from_the_next_request(state_client, config):
    issuer = make_token(config, environment="dev", key_pattern="DATABASE_*", permissions=ISSUE)
    child, jti = mint_child(state_client, issuer)
    url = READ.format(env="dev", key="DATABASE_URL")
    assert state_client.get(url, headers=bearer(child)).status_code == 200

    r = revoke(state_client, issuer, {"jti": jti})

    assert r.status_code == 200 and r.get_json() == {"revoked": jti}
    refused = state_client.get(url, headers=bearer(child))
    assert refused.status_code == 403 and error_code(refused) == "token_revoked"
    # Only that token: the issuer, and a sibling, still work.
    sibling, _ = mint_child(state_client, issuer)
    assert state_client.get(url, headers=bearer(sibling)).status_code == 200
    assert state_client.get(url, headers=bearer(issuer)).status_code == 200


def test_a_revoked_issuer_can_mint_no_more(state_client, config):
    root = make_token(config, permissions=PERMISSIONS)
    issuer, issuer_jti = mint_child(
        state_client, root, environment="dev", key_pattern="*", permissions=list(ISSUE)
    )
    assert revoke(state_client, root, {"jti": issuer_jti}).status_code == 200
    r = state_client.post(
        "/api/v1/vault/tokens/generate",
        json={"subject": "x", "environment": "dev", "key_pattern": "PORT"},
        headers=bearer(issuer),
    )
    assert r.status_code == 403 and error_code(r) == "token_revoked"


def test_any_caller_whose_scope_contains_the_token_may_revoke_it(client, config):
    # Scope decides, not lineage: a narrower issuer revokes a token a root minted.
    root = make_token(config, permissions=PERMISSIONS)
    child, jti = mint_child(client, root, environment="prod", key_pattern="DATABASE_URL")
    other_issuer = make_token(
        config, environment="prod", key_pattern="DATABASE_*", permissions=ISSUE
    )
    assert revoke(client, other_issuer, {"jti": jti}).status_code == 200
    r = client.get(READ.format(env="prod", key="DATABASE_URL"), headers=bearer(child))
    assert error_code(r) == "token_revoked"


@pytest.mark.parametrize(
    "caller_environment, caller_pattern",
    [
        ("dev", "*"),  # another environment
        ("prod", "API_*"),  # another pattern
        ("prod", "DATABASE_?"),  # a pattern that matches less than the token's
        ("prod", "DATABASE_URL"),  # narrower than the token's DATABASE_*
        ("*", "DATABASE_URL"),  # every environment, still a narrower pattern
    ],
)
def test_revoking_a_token_outside_the_callers_scope_is_403(
    client, config, caller_environment, caller_pattern
):
    root = make_token(config, permissions=PERMISSIONS)
    child, jti = mint_child(client, root, environment="prod", key_pattern="DATABASE_*")
    caller = make_token(
        config, environment=caller_environment, key_pattern=caller_pattern, permissions=ISSUE
    )
    r = revoke(client, caller, {"jti": jti})
    assert r.status_code == 403 and error_code(r) == "scope_denied"
    ok = client.get(READ.format(env="prod", key="DATABASE_URL"), headers=bearer(child))
    assert ok.status_code == 200


def test_revoking_needs_tokens_issue(client, config):
    root = make_token(config, permissions=PERMISSIONS)
    _, jti = mint_child(client, root)
    reader = make_token(config, permissions=("secrets:read", "secrets:list", "audit:read"))
    r = revoke(client, reader, {"jti": jti})
    assert r.status_code == 403 and error_code(r) == "permission_denied"


def test_revoking_without_a_valid_token_is_401(client, config):
    r = client.post(REVOKE, json={"jti": "x"})
    assert r.status_code == 401 and error_code(r) == "token_invalid"
    r = client.post(REVOKE, json={"jti": "x"}, headers=bearer("not.a.token"))
    assert r.status_code == 401


@pytest.mark.parametrize(
    "caller_environment, caller_pattern", [("dev", "*"), ("*", "DATABASE_*"), ("prod", "*")]
)
def test_a_jti_not_minted_here_is_404_unless_the_caller_holds_every_scope(
    client, config, caller_environment, caller_pattern
):
    token, jti = offline_token(config, environment="dev", key_pattern="PORT")
    caller = make_token(
        config, environment=caller_environment, key_pattern=caller_pattern, permissions=ISSUE
    )
    r = revoke(client, caller, {"jti": jti})
    assert r.status_code == 404 and error_code(r) == "not_found"
    assert client.get(READ.format(env="dev", key="PORT"), headers=bearer(token)).status_code == 200


def test_a_root_issuer_revokes_a_token_the_broker_never_minted(state_client, config):
    token, jti = offline_token(config, environment="dev", key_pattern="PORT")
    root = make_token(config, permissions=ISSUE)
    r = revoke(state_client, root, {"jti": jti})
    assert r.status_code == 200 and r.get_json() == {"revoked": jti}
    r = state_client.get(READ.format(env="dev", key="PORT"), headers=bearer(token))
    assert r.status_code == 403 and error_code(r) == "token_revoked"


def test_an_unminted_revocation_is_kept_max_ttl_plus_an_hour(tmp_path, config):
    config = replace(config, max_ttl_minutes=90)
    client = create_app(config).test_client()
    root = make_token(config, permissions=ISSUE)
    _, unminted = offline_token(config)
    before = int(time.time())
    assert revoke(client, root, {"jti": unminted}).status_code == 200
    _, minted = mint_child(client, root, ttl_minutes=10)
    assert revoke(client, root, {"jti": minted}).status_code == 200
    with sqlite3.connect(config.state_db) as db:
        kept = dict(db.execute("SELECT jti, expires_at FROM revoked").fetchall())
    assert kept[unminted] >= before + 90 * 60 + 3600
    # A minted token's revocation need only outlive the token (and its clock-skew grace).
    assert before + 10 * 60 + 30 <= kept[minted] <= int(time.time()) + 10 * 60 + RETENTION_SECONDS


def test_an_unminted_revocation_in_redis_expires_after_max_ttl_plus_an_hour(config, redis_server):
    import redis

    from broker.state.redis import RedisTokenState

    config = replace(config, max_ttl_minutes=90)
    client = create_app(config, state=RedisTokenState(redis_server.url)).test_client()
    _, unminted = offline_token(config)
    assert (
        revoke(client, make_token(config, permissions=ISSUE), {"jti": unminted}).status_code == 200
    )
    ttl = redis.Redis.from_url(redis_server.url).ttl(f"vanta:revoked:{unminted}")
    assert 90 * 60 + 3600 - 5 <= ttl <= 90 * 60 + 3600 + 5


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"jti": None},
        {"jti": 42},
        {"jti": True},
        {"jti": ["a"]},
        {"jti": {"a": 1}},
        {"jti": ""},
        {"jti": "x" * 257},
        {"jti": "abc\x00def"},
        {"jti": "abc\ndef"},
        {"jti": "tab\there"},
        {"jti": "ok", "reason": "extra field"},
        [{"jti": "ok"}],
        "ok",
        17,
    ],
)
def test_a_malformed_revoke_body_is_400_naming_the_field(client, config, body):
    root = make_token(config, permissions=ISSUE)
    r = revoke(client, root, body)
    assert r.status_code == 400 and error_code(r) == "bad_request"
    message = r.get_json()["error"]["message"]
    assert "jti" in message or "field" in message or "JSON object" in message


def test_a_revoke_body_that_is_not_json_is_400(client, config):
    root = make_token(config, permissions=ISSUE)
    for data in (b"", b"null", b"{", b"jti=abc", b"\xff\xfe\x00"):
        r = client.post(REVOKE, data=data, headers=bearer(root))
        assert r.status_code == 400, data


def test_a_jti_of_256_printable_characters_is_accepted(client, config):
    root = make_token(config, permissions=ISSUE)
    for jti in ("é" * 256, "a b~!@#$%^&*()", "0"):
        r = revoke(client, root, {"jti": jti})
        assert r.status_code == 200 and r.get_json() == {"revoked": jti}


# -- revoke-self ---------------------------------------------------------------------------


def test_revoke_self_revokes_the_calling_token(state_client, config):
    root = make_token(config, permissions=PERMISSIONS)
    reader, jti = mint_child(state_client, root, permissions=["secrets:read"])

    r = state_client.post(REVOKE_SELF, headers=bearer(reader))

    assert r.status_code == 200 and r.get_json() == {"revoked": jti}
    refused = state_client.get(READ.format(env="dev", key="DATABASE_URL"), headers=bearer(reader))
    assert refused.status_code == 403 and error_code(refused) == "token_revoked"
    again = state_client.post(REVOKE_SELF, headers=bearer(reader))
    assert again.status_code == 403 and error_code(again) == "token_revoked"
    # The issuer is untouched.
    ok = state_client.get(READ.format(env="dev", key="DATABASE_URL"), headers=bearer(root))
    assert ok.status_code == 200


def test_revoke_self_works_for_an_offline_root_token(client, config):
    root = make_token(config, permissions=PERMISSIONS)
    assert client.post(REVOKE_SELF, json={}, headers=bearer(root)).status_code == 200
    r = client.get(READ.format(env="dev", key="PORT"), headers=bearer(root))
    assert error_code(r) == "token_revoked"


def test_revoke_self_needs_a_valid_token_and_refuses_a_body_that_is_not_an_object(client, config):
    assert client.post(REVOKE_SELF).status_code == 401
    token = make_token(config)
    r = client.post(REVOKE_SELF, data=b"[1]", headers=bearer(token))
    assert r.status_code == 400
    # Nothing was revoked by the refused request.
    assert client.get(READ.format(env="dev", key="PORT"), headers=bearer(token)).status_code == 200


def test_revocation_routes_answer_only_post(client, config):
    token = make_token(config)
    for path in (REVOKE, REVOKE_SELF):
        r = client.get(path, headers=bearer(token))
        assert r.status_code == 405 and error_code(r) == "method_not_allowed"


# -- audit ---------------------------------------------------------------------------------


def test_revocations_are_audited_with_their_outcome(client, config):
    root = make_token(config, permissions=PERMISSIONS, subject="root-admin")
    _, jti = mint_child(client, root, environment="prod", key_pattern="API_KEY")
    narrow = make_token(config, environment="dev", permissions=ISSUE, subject="dev-admin")
    revoke(client, narrow, {"jti": jti})
    revoke(client, root, {"jti": jti})
    client.post(REVOKE_SELF, headers=bearer(narrow))

    records = [r for r in read_audit(config) if r["event"].startswith("token.revoke")]
    denied, done, selfie = records
    assert denied["event"] == "token.revoke" and denied["outcome"] == "denied"
    assert denied["status"] == 403 and denied["error"] == "scope_denied"
    assert done["event"] == "token.revoke" and done["outcome"] == "success"
    assert done["subject"] == "root-admin" and done["environment"] == "prod"
    assert done["pattern"] == "API_KEY" and done["status"] == 200
    assert selfie["event"] == "token.revoke_self" and selfie["outcome"] == "success"
    assert selfie["subject"] == "dev-admin" and selfie["environment"] == "dev"


def test_the_audit_record_names_the_revoked_jti(client, config):
    root = make_token(config, permissions=PERMISSIONS)
    _, jti = mint_child(client, root)
    revoke(client, root, {"jti": jti})
    record = [r for r in read_audit(config) if r["event"] == "token.revoke"][-1]
    assert record["revoked_jti"] == jti


# -- state: kept, pruned -----------------------------------------------------------------


def test_expired_revocations_and_minted_scopes_are_pruned(tmp_path: Path):
    state = SqliteTokenState(tmp_path / "state.db")
    now = int(time.time())
    long_gone = now - RETENTION_SECONDS - 60
    state.record_minted(MintedToken("old-minted", "dev", "*", long_gone))
    state.revoke("old", keep_until=long_gone)
    state.revoke("fresh", keep_until=now + 600)
    assert state.is_revoked("old")  # still there until a prune runs

    # A new process prunes on its first write.
    state = SqliteTokenState(tmp_path / "state.db")
    state.record_minted(MintedToken("new", "dev", "*", now + 600))

    assert not state.is_revoked("old")
    assert state.minted("old-minted") is None
    assert state.is_revoked("fresh")
    assert state.minted("new") is not None


def test_expired_revocations_vanish_from_redis(redis_server):
    from broker.state.redis import RedisTokenState

    state = RedisTokenState(redis_server.url)
    state.revoke("old", keep_until=int(time.time()) - 1)
    state.revoke("fresh", keep_until=int(time.time()) + 600)
    assert not state.is_revoked("old")
    assert state.is_revoked("fresh")


def test_revocation_survives_a_restart(config):
    root = make_token(config, permissions=PERMISSIONS)
    client = create_app(config).test_client()
    child, jti = mint_child(client, root)
    assert revoke(client, root, {"jti": jti}).status_code == 200

    restarted = create_app(config).test_client()

    r = restarted.get(READ.format(env="dev", key="DATABASE_URL"), headers=bearer(child))
    assert error_code(r) == "token_revoked"


# -- real processes ------------------------------------------------------------------------

_LOG_LINE = re.compile(r"\[(\d+)\] vanta\.broker INFO \S+ \S+ (\d{3}) .*request_id=([0-9a-f]+)")


def answering_pids(log: str, request_ids: set[str], status: int) -> set[str]:
    """The worker pids whose request log line shows one of `request_ids` with `status`."""
    pids = set()
    for pid, answered, request_id in _LOG_LINE.findall(log):
        if request_id in request_ids and int(answered) == status:
            pids.add(pid)
    return pids


def hammer(url: str, token: str, count: int) -> list[requests.Response]:
    def fetch(_: int) -> requests.Response:
        return requests.get(url, headers=bearer(token), timeout=30)

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(fetch, range(count)))


def test_revocation_holds_in_every_worker_from_the_next_request(config, tmp_path):
    broker = start_broker(config, tmp_path, workers=3, extra_args=["--access-log"])
    try:
        root = make_token(config, permissions=PERMISSIONS)
        r = requests.post(
            f"{broker.url}/api/v1/vault/tokens/generate",
            json={"subject": "svc", "environment": "dev", "key_pattern": "*"},
            headers=bearer(root),
            timeout=30,
        )
        child, jti = r.json()["access_token"], r.json()["scope_details"]["jti"]
        url = f"{broker.url}/api/v1/vault/dev/DATABASE_URL"
        before = hammer(url, child, 60)
        assert {x.status_code for x in before} == {200}

        r = requests.post(f"{broker.url}{REVOKE}", json={"jti": jti}, headers=bearer(root))
        assert r.status_code == 200

        after = hammer(url, child, 60)
        assert all(x.status_code == 403 for x in after)
        assert {x.json()["error"]["code"] for x in after} == {"token_revoked"}
        assert all("postgres://" not in x.text for x in after)
        # Every worker that had served the token now refuses it.
        log = broker.log()
        served = answering_pids(log, {x.headers["X-Request-Id"] for x in before}, 200)
        refused = answering_pids(log, {x.headers["X-Request-Id"] for x in after}, 403)
        assert len(served) >= 2 and served <= refused
    finally:
        stop_broker(broker)


def test_revocation_on_one_broker_holds_on_another_sharing_redis(config, tmp_path, redis_server):
    shared = {"VANTA_STATE_URL": redis_server.url}
    first = start_broker(
        replace(config, audit_log=tmp_path / "a" / "audit.jsonl", state_db=tmp_path / "a.db"),
        tmp_path,
        extra_env=shared,
    )
    second = start_broker(
        replace(config, audit_log=tmp_path / "b" / "audit.jsonl", state_db=tmp_path / "b.db"),
        tmp_path,
        extra_env=shared,
    )
    try:
        root = make_token(config, permissions=PERMISSIONS)
        r = requests.post(
            f"{first.url}/api/v1/vault/tokens/generate",
            json={"subject": "svc", "environment": "dev", "key_pattern": "PORT"},
            headers=bearer(root),
            timeout=30,
        )
        child, jti = r.json()["access_token"], r.json()["scope_details"]["jti"]
        url = f"{second.url}/api/v1/vault/dev/PORT"
        assert requests.get(url, headers=bearer(child), timeout=30).status_code == 200
        # The second broker knows the scope the first one minted: a narrow issuer may
        # revoke there.
        narrow = make_token(config, environment="dev", key_pattern="P*", permissions=ISSUE)
        r = requests.post(f"{second.url}{REVOKE}", json={"jti": jti}, headers=bearer(narrow))
        assert r.status_code == 200
        for base in (first.url, second.url):
            refused = requests.get(f"{base}/api/v1/vault/dev/PORT", headers=bearer(child))
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "token_revoked"
    finally:
        stop_broker(first)
        stop_broker(second)


def test_an_oversized_revocation_is_413_and_audited_under_its_event(client, config):
    root = make_token(config, permissions=PERMISSIONS)
    big = b'{"jti": "' + b"x" * (1024 * 1024) + b'"}'
    for path, event in ((REVOKE, "token.revoke"), (REVOKE_SELF, "token.revoke_self")):
        r = client.post(path, data=big, headers=bearer(root))
        assert r.status_code == 413 and error_code(r) == "payload_too_large"
        record = read_audit(config)[-1]
        assert record["event"] == event and record["status"] == 413
    # Nothing was revoked.
    assert client.get(READ.format(env="dev", key="PORT"), headers=bearer(root)).status_code == 200


def test_revoke_self_over_a_chunked_body_on_the_real_broker(config, tmp_path):
    broker = start_broker(config, tmp_path)
    try:
        url = f"{broker.url}{REVOKE_SELF}"
        token = make_token(config, permissions=("secrets:read",))
        big = [b'{"pad": "', b" " * (1024 * 1024), b'"}']
        r = requests.post(url, data=iter(big), headers=bearer(token), timeout=30)
        assert r.status_code == 413  # measured although no length was sent
        r = requests.post(url, data=iter([b"{", b"}"]), headers=bearer(token), timeout=30)
        assert r.status_code == 200 and r.json()["revoked"]
        r = requests.get(f"{broker.url}/api/v1/vault/dev/PORT", headers=bearer(token), timeout=30)
        assert r.json()["error"]["code"] == "token_revoked"
    finally:
        stop_broker(broker)


def test_a_second_revocation_never_shortens_the_first_in_sqlite(tmp_path):
    later, sooner = int(time.time()) + 7200, int(time.time()) + 600
    state = SqliteTokenState(tmp_path / "state.db")
    state.revoke("j", keep_until=later)
    state.revoke("j", keep_until=sooner)
    with sqlite3.connect(tmp_path / "state.db") as db:
        kept = db.execute("SELECT expires_at FROM revoked WHERE jti = 'j'").fetchone()[0]
    assert kept == later


def test_a_second_revocation_never_shortens_the_first_in_redis(redis_server):
    import redis as redis_lib

    from broker.state.redis import RedisTokenState

    later, sooner = int(time.time()) + 7200, int(time.time()) + 600
    state = RedisTokenState(redis_server.url)
    state.revoke("j", keep_until=later)
    state.revoke("j", keep_until=sooner)
    assert redis_lib.Redis.from_url(redis_server.url).ttl("vanta:revoked:j") >= 7000
