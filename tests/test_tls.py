"""HTTPS, mutual TLS and the refusal of plain HTTP on a network address."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests
from conftest import bearer, broker_env, make_token, read_audit, start_broker, stop_broker


def test_mutual_tls_reads_and_audits_the_client_certificate(config, tmp_path, pki):
    args = [
        "--certfile",
        str(pki["cert"]),
        "--keyfile",
        str(pki["key"]),
        "--client-ca",
        str(pki["ca"]),
    ]
    tls = {"verify": str(pki["ca"]), "cert": str(pki["client"])}
    broker = start_broker(config, tmp_path, extra_args=args, scheme="https", health_kwargs=tls)
    try:
        token = make_token(config, environment="dev")
        r = requests.get(f"{broker.url}/api/v1/vault/dev/PORT", headers=bearer(token), **tls)
        assert r.status_code == 200 and r.json()["value"] == 8080
        assert read_audit(config)[-1]["client_cert"].startswith("CN=billing-api,OU=")
        before = len(read_audit(config))
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(
                f"{broker.url}/api/v1/vault/dev/PORT",
                headers=bearer(token),
                verify=str(pki["ca"]),
                timeout=10,
            )
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(broker.url.replace("https", "http") + "/healthz", timeout=10)
        assert len(read_audit(config)) == before
    finally:
        stop_broker(broker)


def test_plain_http_on_a_network_address_is_refused(config):
    proc = subprocess.run(
        [sys.executable, "-m", "broker", "serve", "--host", "0.0.0.0", "--port", "0"],
        env=broker_env(config),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--insecure-http" in lines[0] and "refusing plain HTTP" in lines[0]
