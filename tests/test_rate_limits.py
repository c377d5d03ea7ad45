"""Rate limits: per token, and the failed-authentication throttle per client address."""

from __future__ import annotations

from dataclasses import replace

import jwt
import pytest
import requests
from support.brokers import read_audit
from support.tokens import bearer, make_token, minute_with_room

from broker.config import Config, ConfigError, parse_networks
from broker.web.app import create_app


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


def test_a_peer_outside_the_trusted_networks_cannot_choose_its_address(config):
    """The red team's case: with VANTA_TRUSTED_PROXIES=1, a client reaching the broker
    directly put any address in X-Forwarded-For and was never throttled."""
    client = create_app(replace(config, trusted_proxies=1)).test_client()
    minute_with_room()
    direct = {"REMOTE_ADDR": "192.0.2.50"}  # not in the default 127.0.0.0/8, ::1/128
    for n in range(31):
        forged = {"X-Forwarded-For": f"203.0.113.{n}", **bearer("junk")}
        client.get("/api/v1/vault/dev/PORT", headers=forged, environ_base=direct)
    good = make_token(config, environment="dev")
    r = client.get(
        "/api/v1/vault/dev/PORT",
        headers={"X-Forwarded-For": "198.51.100.9", **bearer(good)},
        environ_base=direct,
    )
    assert r.status_code == 429  # its own address, counted 31 times
    assert read_audit(config)[-1]["client_ip"] == "192.0.2.50"


@pytest.mark.parametrize(
    "forwarded",
    [
        '1.2.3.4", "outcome":"success',
        "not-an-address",
        "1.2.3.4 5.6.7.8",
        "",
        "999.1.1.1",
    ],
)
def test_a_forwarded_value_that_is_not_an_ip_address_is_ignored(config, forwarded):
    client = create_app(replace(config, trusted_proxies=1)).test_client()
    good = make_token(config, environment="dev")
    r = client.get("/api/v1/vault/dev/PORT", headers={"X-Forwarded-For": forwarded, **bearer(good)})
    assert r.status_code == 200
    assert read_audit(config)[-1]["client_ip"] == "127.0.0.1"  # the peer's own


def test_trusted_networks_are_configurable(config):
    networks = parse_networks("10.0.0.0/8, 2001:db8::/32")
    client = create_app(
        replace(config, trusted_proxies=2, trusted_proxy_networks=networks)
    ).test_client()
    good = make_token(config, environment="dev")
    hops = {"X-Forwarded-For": "198.51.100.7, 10.1.2.3", **bearer(good)}
    client.get("/api/v1/vault/dev/PORT", headers=hops, environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert read_audit(config)[-1]["client_ip"] == "198.51.100.7"
    client.get("/api/v1/vault/dev/PORT", headers=hops)  # from 127.0.0.1: no longer trusted
    assert read_audit(config)[-1]["client_ip"] == "127.0.0.1"


def test_the_trusted_networks_setting_is_checked_at_start_up():
    with pytest.raises(ConfigError, match="VANTA_TRUSTED_PROXY_NETWORKS: 'ten' is not a network"):
        Config.from_env(
            {
                "VANTA_JWT_SECRET_KEY": "k" * 32,
                "VANTA_SOPS_FILES_PATH": ".",
                "VANTA_TRUSTED_PROXY_NETWORKS": "10.0.0.0/8,ten",
            }
        )


def test_throttle_holds_across_worker_processes(running_broker, config):
    url = f"{running_broker.url}/api/v1/vault/dev/PORT"
    minute_with_room()
    for _ in range(31):  # fresh connections: both workers take some
        assert requests.get(url, headers=bearer("junk"), timeout=10).status_code == 401
    good = make_token(config, environment="dev")
    assert requests.get(url, headers=bearer(good), timeout=10).status_code == 429
