"""The SDK and the CLI over HTTPS and mutual TLS (SPEC §17) against a real broker started
with --certfile/--keyfile/--client-ca: ca_bundle=, client_cert= (combined PEM, cert and
key, a tuple), and VANTA_CA_BUNDLE (which wins over REQUESTS_CA_BUNDLE and
CURL_CA_BUNDLE), VANTA_CLIENT_CERT and VANTA_CLIENT_KEY."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from support.brokers import read_audit, start_broker, stop_broker
from support.tokens import make_token

import cli
from cli.client import BrokerUnavailable, VaultClient, VaultError

ROOT = Path(cli.__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from cli.main import main; main()"]
TLS_VARIABLES = (
    "VANTA_CA_BUNDLE",
    "VANTA_CLIENT_CERT",
    "VANTA_CLIENT_KEY",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)


@pytest.fixture
def pki(tmp_path):
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("billing-api@example.com", common_name="billing-api")
    paths = {
        name: tmp_path / f"{name}.pem"
        for name in ("ca", "server", "server-key", "client", "client-cert", "client-key", "other")
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    trustme.CA().cert_pem.write_to_path(str(paths["other"]))  # trusts nothing we meet
    server.cert_chain_pems[0].write_to_path(str(paths["server"]))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(paths["server"]), append=True)
    server.private_key_pem.write_to_path(str(paths["server-key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["client"]))
    client.cert_chain_pems[0].write_to_path(str(paths["client-cert"]))
    client.private_key_pem.write_to_path(str(paths["client-key"]))
    return {name: str(path) for name, path in paths.items()}


@pytest.fixture
def tls_broker(config, tmp_path, pki, monkeypatch):
    for name in TLS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    args = [
        "--certfile",
        pki["server"],
        "--keyfile",
        pki["server-key"],
        "--client-ca",
        pki["ca"],
    ]
    health = {"verify": pki["ca"], "cert": pki["client"]}
    broker = start_broker(
        config, tmp_path, workers=1, extra_args=args, scheme="https", health_kwargs=health
    )
    yield broker
    stop_broker(broker)


def reader(config) -> str:
    return make_token(config, environment="dev", permissions=("secrets:read", "secrets:list"))


@pytest.mark.parametrize(
    "client_args",
    [
        pytest.param(lambda p: {"client_cert": p["client"]}, id="one PEM with cert and key"),
        pytest.param(
            lambda p: {"client_cert": p["client-cert"], "client_key": p["client-key"]},
            id="cert and key paths",
        ),
        pytest.param(lambda p: {"client_cert": (p["client-cert"], p["client-key"])}, id="a tuple"),
    ],
)
def test_the_sdk_reads_over_mutual_tls(tls_broker, config, pki, client_args):
    client = VaultClient(
        tls_broker.url, reader(config), ca_bundle=pki["ca"], environ={}, **client_args(pki)
    )
    assert client.get("dev", "PORT").value == 8080
    assert client.get_secret_value(SecretId="dev/DEBUG")["SecretString"] == "true"
    assert read_audit(config)[-1]["client_cert"].startswith("CN=billing-api,")


def test_vanta_variables_win_over_requests_and_curl_ones(tls_broker, config, pki, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", pki["other"])
    monkeypatch.setenv("CURL_CA_BUNDLE", pki["other"])
    monkeypatch.setenv("VANTA_CLIENT_CERT", pki["client-cert"])
    monkeypatch.setenv("VANTA_CLIENT_KEY", pki["client-key"])
    with pytest.raises(BrokerUnavailable, match="cannot reach the broker"):
        VaultClient(tls_broker.url, reader(config)).get("dev", "PORT")  # the wrong CA
    monkeypatch.setenv("VANTA_CA_BUNDLE", pki["ca"])
    assert VaultClient(tls_broker.url, reader(config)).get("dev", "PORT").value == 8080


def test_without_a_client_certificate_the_handshake_fails_in_one_line(tls_broker, config, pki):
    client = VaultClient(tls_broker.url, reader(config), ca_bundle=pki["ca"], environ={})
    before = len(read_audit(config))
    with pytest.raises(BrokerUnavailable) as caught:
        client.get("dev", "PORT")
    assert str(caught.value).startswith(f"cannot reach the broker at {tls_broker.url}: ")
    assert "\n" not in str(caught.value), str(caught.value)
    assert len(read_audit(config)) == before


def test_a_missing_certificate_file_is_a_vault_error(tls_broker, config, pki, tmp_path):
    missing = str(tmp_path / "nowhere.pem")
    client = VaultClient(
        tls_broker.url, reader(config), ca_bundle=missing, client_cert=pki["client"], environ={}
    )
    with pytest.raises(VaultError, match="TLS settings: .*nowhere.pem"):
        client.get("dev", "PORT")


def test_a_client_key_without_a_certificate_is_refused():
    with pytest.raises(VaultError, match="needs a certificate"):
        VaultClient("https://vault.test", "t", environ={"VANTA_CLIENT_KEY": "/k.pem"})


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        timeout=120,
    )


def test_the_cli_mints_and_reads_over_mutual_tls(tls_broker, config, pki):
    issuer = make_token(config, environment="dev")
    env = {
        "VANTA_BROKER_URL": tls_broker.url,
        "VANTA_TOKEN": issuer,
        "VANTA_CA_BUNDLE": pki["ca"],
        "VANTA_CLIENT_CERT": pki["client-cert"],
        "VANTA_CLIENT_KEY": pki["client-key"],
        "REQUESTS_CA_BUNDLE": pki["other"],
    }
    minted = run_cli(
        "token", "generate", "--subject", "svc", "--environment", "dev", "--key-pattern", "*",
        env=env,
    )  # fmt: skip
    assert minted.returncode == 0, minted.stderr
    ran = run_cli(
        "run-with-secrets", "--environment", "dev", "--key-pattern", "PORT", "--",
        sys.executable, "-c", "import os; print(os.environ['PORT'])",
        env=env,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "8080\n"
    events = [(r["event"], r["status"]) for r in read_audit(config)]
    assert events[-3:] == [("token.generate", 201), ("token.generate", 201), ("secret.batch", 200)]
    assert all(r["client_cert"].startswith("CN=billing-api,") for r in read_audit(config))
    refused = run_cli(
        "token", "generate", "--subject", "svc", "--environment", "dev", "--key-pattern", "*",
        env={**env, "VANTA_CLIENT_CERT": "", "VANTA_CLIENT_KEY": ""},
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"error: cannot reach the broker at {tls_broker.url}: ")
