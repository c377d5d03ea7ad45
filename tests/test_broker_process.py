"""A real `vanta-broker serve` process: exact usage limits across workers, headers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests
from support.brokers import read_audit
from support.tokens import bearer, make_token


def test_usage_limit_is_exact_across_workers(running_broker, config):
    token = make_token(config, environment="dev", key_pattern="*", usage_limit=10)
    url = f"{running_broker.url}/api/v1/vault/dev/DATABASE_URL"

    def fetch(_: int) -> int:
        return requests.get(url, headers=bearer(token), timeout=30).status_code

    with ThreadPoolExecutor(max_workers=48) as pool:
        statuses = list(pool.map(fetch, range(48)))
    assert statuses.count(200) == 10
    assert statuses.count(403) == 38
    successes = [r for r in read_audit(config) if r["status"] == 200]
    assert len(successes) == 10


def test_real_server_names_no_framework(running_broker):
    r = requests.get(f"{running_broker.url}/healthz", timeout=5)
    assert r.headers.get("Server", "vanta-broker") == "vanta-broker"
