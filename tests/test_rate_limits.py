"""Rate limits: per token, and the failed-authentication throttle per client address."""

from __future__ import annotations

from dataclasses import replace

import jwt
import requests
from conftest import bearer, make_token, minute_with_room, read_audit

from broker.app import create_app


def jti_of(token: str) -> str:
    return jwt.decode(token, options={"verify_signature": False})["jti"]


def test_token_over_its_rate_gets_429_with_retry_after_and_keeps_its_uses(config):
    app = create_app(replace(config, rate_limit="5/minute"))
    client = app.test_client()
    token = make_token(config, environment="dev", usage_limit=100)
    statuses = [
        client.get("/api/v1/vault/dev/PORT", headers=bearer(token)).status_code for _ in range(5)
    ]
    assert statuses == [200] * 5
    r = client.get("/api/v1/vault/dev/PORT", headers=bearer(token))
    assert r.status_code == 429 and r.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert "8080" not in r.get_data(as_text=True)
    assert app.extensions["vanta"].state.used(jti_of(token)) == 5
    record = read_audit(config)[-1]
    assert (record["status"], record["outcome"], record["error"]) == (429, "error", "rate_limited")
    # Another token is not affected.
    other = make_token(config, environment="dev")
    assert client.get("/api/v1/vault/dev/PORT", headers=bearer(other)).status_code == 200


def test_too_many_401s_from_one_address_throttle_every_request_from_it(config):
    client = create_app(config).test_client()
    minute_with_room()
    good = make_token(config, environment="dev")
    for _ in range(31):
        assert client.get("/api/v1/vault/dev/PORT", headers=bearer("junk")).status_code == 401
    r = client.get("/api/v1/vault/dev/PORT", headers=bearer(good))
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    record = read_audit(config)[-1]
    assert record["error"] == "rate_limited" and record["jti"] is None and record["subject"] is None
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200


def test_thirty_failures_are_still_allowed(config):
    client = create_app(config).test_client()
    for _ in range(30):
        client.get("/api/v1/vault/dev/PORT", headers=bearer("junk"))
    good = make_token(config, environment="dev")
    assert client.get("/api/v1/vault/dev/PORT", headers=bearer(good)).status_code == 200


def test_throttle_can_be_turned_off(config):
    client = create_app(replace(config, auth_failures_per_minute=0)).test_client()
    for _ in range(40):
        client.get("/api/v1/vault/dev/PORT", headers=bearer("junk"))
    good = make_token(config, environment="dev")
    assert client.get("/api/v1/vault/dev/PORT", headers=bearer(good)).status_code == 200


def test_trusted_proxy_address_decides_who_is_throttled(config):
    client = create_app(replace(config, trusted_proxies=1)).test_client()
    minute_with_room()
    attacker = {"X-Forwarded-For": "203.0.113.7", **bearer("junk")}
    for _ in range(31):
        client.get("/api/v1/vault/dev/PORT", headers=attacker)
    good = make_token(config, environment="dev")
    r = client.get(
        "/api/v1/vault/dev/PORT", headers={"X-Forwarded-For": "198.51.100.2", **bearer(good)}
    )
    assert r.status_code == 200
    assert read_audit(config)[-1]["client_ip"] == "198.51.100.2"
    r = client.get(
        "/api/v1/vault/dev/PORT", headers={"X-Forwarded-For": "203.0.113.7", **bearer(good)}
    )
    assert r.status_code == 429


def test_throttle_holds_across_worker_processes(running_broker, config):
    url = f"{running_broker.url}/api/v1/vault/dev/PORT"
    minute_with_room()
    for _ in range(31):  # fresh connections: both workers take some
        assert requests.get(url, headers=bearer("junk"), timeout=10).status_code == 401
    good = make_token(config, environment="dev")
    assert requests.get(url, headers=bearer(good), timeout=10).status_code == 429
