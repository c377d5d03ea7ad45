"""Fixtures that build real things: age keys, Git repositories of SOPS files, brokers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import settings
from support.agekeys import AgeKey, generate_age_key
from support.brokers import RunningBroker, free_port, start_broker, stop_broker
from support.redis import RedisServer
from support.repos import (
    DEV_SECRETS,
    GIT_ENV,
    PROD_SECRETS,
    SIGNING_KEY,
    SOPS_BIN,
    SecretsRepo,
    make_secrets_repo,
)

from broker.config import Config, Keyring, SecretValue
from broker.web.app import create_app

# Examples take a millisecond; a stall of the shared CI machine must not fail one on time.
settings.register_profile("vanta", deadline=None)
settings.load_profile("vanta")


@pytest.fixture(scope="session")
def age_key(tmp_path_factory: pytest.TempPathFactory) -> AgeKey:
    return generate_age_key()


@pytest.fixture(scope="session")
def age_key_file(tmp_path_factory: pytest.TempPathFactory, age_key: AgeKey) -> Path:
    path = tmp_path_factory.mktemp("age") / "identity.txt"
    path.write_text(f"# test identity\n{age_key.identity}\n")
    path.chmod(0o600)
    return path


@pytest.fixture(autouse=True)
def _sops_key_env(monkeypatch: pytest.MonkeyPatch, age_key_file: Path) -> None:
    # The CLI (like sops itself) takes the caller's key from SOPS_AGE_KEY_FILE.
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(age_key_file))
    client_vars = (
        "VANTA_TOKEN",
        "VANTA_BROKER_URL",
        "VANTA_JWT_SECRET_KEY",
        "VANTA_JWT_SECRET_KEYS",
    )
    for name in client_vars:
        monkeypatch.delenv(name, raising=False)
    for name, value in GIT_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def secrets_repo(tmp_path: Path, age_key: AgeKey) -> SecretsRepo:
    repo = make_secrets_repo(tmp_path / "repo", age_key.recipient)
    repo.write("dev", DEV_SECRETS)
    repo.write("prod", PROD_SECRETS)
    repo.commit("secrets: add dev and prod")
    return repo


@pytest.fixture
def config(tmp_path: Path, secrets_repo: SecretsRepo, age_key_file: Path) -> Config:
    return Config(
        keyring=Keyring(((None, SecretValue(SIGNING_KEY)),)),
        sops_files_path=secrets_repo.secrets_dir,
        audit_log=tmp_path / "audit" / "access.jsonl",
        state_db=tmp_path / "state" / "broker.db",
        sops_bin=SOPS_BIN,
        sops_age_key_file=age_key_file,
    )


@pytest.fixture
def app(config: Config):
    return create_app(config)


@pytest.fixture
def client(app):
    return app.test_client()


# -- a real broker process on loopback ------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("billing-api@example.com", common_name="billing-api")
    paths = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "server.pem",
        "key": tmp_path / "server-key.pem",
        "client": tmp_path / "client.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(paths["cert"]), append=True)
    server.private_key_pem.write_to_path(str(paths["key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["client"]))
    return paths


@pytest.fixture
def running_broker(config: Config, tmp_path: Path) -> Iterator[RunningBroker]:
    broker = start_broker(config, tmp_path)
    yield broker
    stop_broker(broker)


__all__ = ["replace"]


# -- a real redis-server on loopback ----------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()
