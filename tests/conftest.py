"""Fixtures that build real things: age keys, Git repositories of SOPS files, brokers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import requests
from agekeys import AgeKey, generate_age_key
from hypothesis import settings

from broker.config import Config, Keyring, SecretValue, default_sops_bin
from broker.scope import PERMISSIONS, Scope
from broker.tokens.claims import MintRequest, mint
from broker.web.app import create_app

SIGNING_KEY = "test-signing-key-0123456789-abcdefghijklmnop"
SOPS_BIN = default_sops_bin()
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ada Tester",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada Tester",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}

DEV_SECRETS = {
    "DATABASE_URL": "postgres://app:s3cret@db/dev",
    "DATABASE_USER": "app",
    "PORT": 8080,
    "DEBUG": True,
    "API_KEYS": {"openai": "sk-test-openai", "stripe": "sk_test_stripe"},
}
PROD_SECRETS = {"DATABASE_URL": "postgres://app:prod@db/prod", "API_KEY": "prod-api-key"}


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


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV, **(env or {})},
        check=True,
    )
    return proc.stdout.strip()


def sops_encrypt(repo: Path, relpath: str, data: dict[str, Any]) -> bytes:
    """Encrypt `data` as sops would for `relpath` under the repo's .sops.yaml."""
    proc = subprocess.run(
        [
            SOPS_BIN,
            "encrypt",
            "--filename-override",
            relpath,
            "--input-type",
            "json",
            "--output-type",
            "yaml",
            "/dev/stdin",
        ],
        input=json.dumps(data).encode(),
        capture_output=True,
        cwd=repo,
        check=True,
    )
    return proc.stdout


@dataclass
class SecretsRepo:
    """A real Git repository with a .sops.yaml and secrets/<env>.enc.yaml files."""

    path: Path
    recipient: str
    commits: list[str] = field(default_factory=list)

    @property
    def secrets_dir(self) -> Path:
        return self.path / "secrets"

    def write(self, environment: str, data: dict[str, Any]) -> Path:
        target = self.secrets_dir / f"{environment}.enc.yaml"
        target.write_bytes(sops_encrypt(self.path, f"secrets/{environment}.enc.yaml", data))
        return target

    def commit(self, message: str, date: str | None = None) -> str:
        env = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date} if date else None
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "-m", message, env=env)
        sha = git(self.path, "rev-parse", "HEAD")
        self.commits.append(sha)
        return sha

    def write_and_commit(self, environment: str, data: dict[str, Any], message: str) -> str:
        self.write(environment, data)
        return self.commit(message)


def make_secrets_repo(path: Path, recipient: str) -> SecretsRepo:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    (path / ".sops.yaml").write_text(
        f"creation_rules:\n  - path_regex: (^|/)secrets/[^/]+\\.enc\\.yaml$\n    age: {recipient}\n"
    )
    (path / "secrets").mkdir()
    return SecretsRepo(path, recipient)


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


def make_token(
    config: Config,
    *,
    environment: str = "*",
    key_pattern: str = "*",
    permissions: tuple[str, ...] = PERMISSIONS,
    usage_limit: int | None = None,
    ttl_minutes: int = 15,
    subject: str = "test-suite",
) -> str:
    request = MintRequest(
        subject, Scope(environment, key_pattern, permissions), ttl_minutes, usage_limit
    )
    token, _ = mint(request, config.keyring, issuer=config.jwt_issuer, audience=config.jwt_audience)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def read_audit(config: Config) -> list[dict[str, Any]]:
    if not config.audit_log.exists():
        return []
    return [json.loads(line) for line in config.audit_log.read_text().splitlines()]


def minute_with_room(seconds: float = 15.0) -> None:
    """The failed-authentication throttle counts in fixed UTC minutes: a test that counts
    up to it starts with `seconds` of the minute left, so the window cannot turn under it
    (waits out the rest of the minute otherwise)."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.05)  # a clock boundary: nothing to poll


# -- a real broker process on loopback ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broker_env(config: Config) -> dict[str, str]:
    env = {
        **os.environ,
        "VANTA_JWT_SECRET_KEY": SIGNING_KEY,
        "VANTA_SOPS_FILES_PATH": str(config.sops_files_path),
        "VANTA_AUDIT_LOG": str(config.audit_log),
        "VANTA_STATE_DB": str(config.state_db),
        "SOPS_AGE_KEY_FILE": str(config.sops_age_key_file),
        "VANTA_DECRYPT_CACHE": "on" if config.decrypt_cache else "off",
    }
    return env


@dataclass
class RunningBroker:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_broker(
    config: Config,
    tmp_path: Path,
    *,
    workers: int = 2,
    extra_env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    scheme: str = "http",
    health_kwargs: dict[str, Any] | None = None,
) -> RunningBroker:
    port = free_port()
    log_path = tmp_path / f"broker-{port}.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "broker",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            *(extra_args or []),
        ],
        env={**broker_env(config), **(extra_env or {})},
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"broker exited: {log_path.read_text()}")
        try:
            r = requests.get(f"{url}/healthz", timeout=1, **(health_kwargs or {}))
            if r.status_code == 200:
                return RunningBroker(url, process, log_path)
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.05)  # a worker may listen before its app is loaded
    process.kill()
    raise RuntimeError("broker did not start")


def stop_broker(broker: RunningBroker) -> None:
    broker.process.send_signal(signal.SIGINT)  # gunicorn's quick shutdown
    try:
        broker.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        broker.process.kill()
        broker.process.wait()


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


@dataclass
class RedisServer:
    port: int
    directory: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()
