"""HTTPS, mutual TLS and the refusal of plain HTTP on a network address."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests
from support.brokers import broker_env, read_audit, start_broker, stop_broker
from support.tokens import bearer, make_token


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


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_https_answers_say_strict_transport_security_and_keep_tls_1_2(
    config, tmp_path, pki, server
):
    import ssl
    import urllib.request
    import warnings

    args = ["--server", server, "--certfile", str(pki["cert"]), "--keyfile", str(pki["key"])]
    tls = {"verify": str(pki["ca"])}
    broker = start_broker(config, tmp_path, extra_args=args, scheme="https", health_kwargs=tls)
    try:
        token = make_token(config, environment="dev")
        for path, headers in [("/healthz", {}), ("/api/v1/vault/dev/PORT", bearer(token))]:
            r = requests.get(f"{broker.url}{path}", headers=headers, **tls)
            assert r.status_code == 200
            assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
        # A TLS 1.2-only client is served: the floor is 1.2, not granian's default 1.3.
        context = ssl.create_default_context(cafile=str(pki["ca"]))
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with urllib.request.urlopen(f"{broker.url}/healthz", context=context) as answer:
            assert answer.status == 200
        context = ssl.create_default_context(cafile=str(pki["ca"]))
        with warnings.catch_warnings():  # the old versions are deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            context.maximum_version = ssl.TLSVersion.TLSv1_1
            context.minimum_version = ssl.TLSVersion.TLSv1
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{broker.url}/healthz", context=context, timeout=10)
    finally:
        stop_broker(broker)


def test_plain_http_answers_carry_no_strict_transport_security(running_broker):
    r = requests.get(f"{running_broker.url}/healthz", timeout=10)
    assert r.status_code == 200 and "Strict-Transport-Security" not in r.headers
