"""/metrics: Prometheus text, summed across workers, no names or tokens in labels."""

from __future__ import annotations

import re
from dataclasses import replace

import requests
from support.brokers import start_broker, stop_broker
from support.tokens import bearer, make_token

from broker.config import SecretValue
from broker.web.app import create_app


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, value = line.rsplit(" ", 1)
        found = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if series.split("{")[0] == name and found == labels:
            return float(value)
    return 0.0


def test_counters_exist_at_zero_from_start_up(client):
    text = client.get("/metrics").get_data(as_text=True)
    for name in (
        "vanta_decrypt_total",
        "vanta_decrypt_cache_hits_total",
        "vanta_usage_exhausted_total",
        "vanta_audit_write_failures_total",
    ):
        assert re.search(rf"^{name} 0\.0$", text, re.M), name
    for result in ("success", "refused", "failed"):
        assert f'vanta_git_sync_total{{result="{result}"}} 0.0' in text


def test_requests_are_counted_by_url_rule_never_by_key_or_subject(client, config):
    token = make_token(config, environment="dev", subject="billing-api", usage_limit=1)
    client.get("/api/v1/vault/dev/DATABASE_URL", headers=bearer(token))
    client.get("/api/v1/vault/dev/DATABASE_URL", headers=bearer(token))
    text = client.get("/metrics").get_data(as_text=True)
    rule = "/api/v1/vault/<environment>/<path:key>"
    assert sample(text, "vanta_requests_total", endpoint=rule, method="GET", status="200") == 1
    assert sample(text, "vanta_requests_total", endpoint=rule, method="GET", status="403") == 1
    assert sample(text, "vanta_usage_exhausted_total") == 1
    assert "DATABASE_URL" not in text and "billing-api" not in text and token not in text


def test_metrics_token_is_required_when_configured(config):
    client = create_app(replace(config, metrics_token=SecretValue("scrape-me"))).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer("wrong")).status_code == 401
    assert client.get("/metrics", headers=bearer("scrape-me")).status_code == 200


def _answering_pids(log: str) -> set[str]:
    rule = "/api/v1/vault/<environment>/<path:key> 200"
    return set(re.findall(rf"\[(\d+)\] vanta\.broker INFO GET {re.escape(rule)}", log))


def test_counts_add_up_across_two_workers(config, tmp_path):
    running_broker = start_broker(config, tmp_path, extra_args=["--access-log"])
    try:
        _count_across_workers(running_broker, config)
    finally:
        stop_broker(running_broker)


def _count_across_workers(running_broker, config):
    token = make_token(config, environment="dev")
    url = f"{running_broker.url}/api/v1/vault/dev/PORT"
    sent = 0
    # Fresh connections until both workers have answered (bounded).
    while sent < 400 and (sent < 20 or len(_answering_pids(running_broker.log())) < 2):
        assert requests.get(url, headers=bearer(token), timeout=10).status_code == 200
        sent += 1
    assert len(_answering_pids(running_broker.log())) == 2
    text = requests.get(f"{running_broker.url}/metrics", timeout=10).text
    rule = "/api/v1/vault/<environment>/<path:key>"
    assert sample(text, "vanta_requests_total", endpoint=rule, method="GET", status="200") == sent


def test_decrypts_and_cache_hits_are_counted(client, config):
    token = make_token(config, environment="dev")
    for _ in range(3):
        assert client.get("/api/v1/vault/dev/PORT", headers=bearer(token)).status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, "vanta_decrypt_total") == 1
    assert sample(text, "vanta_decrypt_cache_hits_total") == 2
