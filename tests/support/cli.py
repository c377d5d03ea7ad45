"""vanta-cli run against a real broker: its environment, arguments and fixtures."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import pytest
import requests

from broker.config import Config, Keyring, SecretValue

from .brokers import start_broker, stop_broker
from .repos import DEV_SECRETS, SIGNING_KEY, SOPS_BIN, SecretsRepo, make_secrets_repo
from .tokens import make_token

VANTA_CLI = str(Path(sys.executable).parent / "vanta-cli")


ISSUER = ("secrets:read", "secrets:list", "tokens:issue")


READER = ("secrets:read", "secrets:list")


# Values a dotenv writer gets wrong: line breaks, both quotes, $, #, backslashes, ...
AWKWARD = {
    "MULTILINE": "line one\nline two\n",
    "QUOTES": "he said \"hi\" and 'bye'",
    "DOLLAR": "$HOME, $1 and a lone $",
    "BRACED": "${HOME} and ${NOPE:-default}",
    "HASH": "value # not a comment #",
    "BACKSLASH": 'C:\\path\\to\\n \\\\ \\" end\\',
    "CRLF": "a\r\nb\rc",
    "SPACES": "  padded  ",
    "TAB": "a\tb",
    "UNICODE": "pässwörd ✓ 密码",
    "EQUALS": "a=b==c",
    "EMPTY": "",
    "QUOTED": '"already quoted"',
    "EXPORT": "export X=1",
}


@dataclass
class Broker:
    url: str
    config: Config
    repo_commit: str
    repo: SecretsRepo | None = None

    def token(self, **kwargs) -> str:
        return make_token(self.config, **kwargs)


@contextmanager
def serve_secrets(
    root: Path, age_key, age_key_file: Path, **environments: dict
) -> Iterator[Broker]:
    """A broker process serving one commit of `environments` (for the other run-with-secrets
    test modules too)."""
    repo = make_secrets_repo(root / "repo", age_key.recipient)
    for name, data in environments.items():
        repo.write(name, data)
    commit = repo.commit("secrets: " + ", ".join(environments))
    config = Config(
        keyring=Keyring(((None, SecretValue(SIGNING_KEY)),)),
        sops_files_path=repo.secrets_dir,
        audit_log=root / "audit" / "access.jsonl",
        state_db=root / "state" / "broker.db",
        sops_bin=SOPS_BIN,
        sops_age_key_file=age_key_file,
    )
    running = start_broker(config, root)
    try:
        yield Broker(running.url, config, commit, repo)
    finally:
        stop_broker(running)


@pytest.fixture(scope="module")
def broker(tmp_path_factory, age_key, age_key_file) -> Iterator[Broker]:
    clash = {"API_KEYS": {"openai": "a"}, "API_KEYS_OPENAI": "b", "OTHER": "c"}
    root = tmp_path_factory.mktemp("run")
    with serve_secrets(
        root, age_key, age_key_file, dev=DEV_SECRETS, awkward=AWKWARD, clash=clash
    ) as running:
        yield running


@dataclass
class Exchange:
    method: str
    path: str
    authorization: str
    body: bytes
    status: int
    answer: bytes


@dataclass
class RecordingProxy:
    """A real HTTP hop between the CLI and the broker that records every exchange."""

    url: str
    exchanges: list[Exchange] = field(default_factory=list)

    def paths(self) -> list[tuple[str, str]]:
        return [(e.method, e.path) for e in self.exchanges]


@pytest.fixture
def proxy(broker: Broker) -> Iterator[RecordingProxy]:
    record = RecordingProxy("")

    class Forward(http.server.BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            answer = requests.request(
                self.command, broker.url + self.path, data=body, headers=headers, timeout=30
            )
            record.exchanges.append(
                Exchange(
                    self.command,
                    self.path,
                    self.headers.get("Authorization", ""),
                    body,
                    answer.status_code,
                    answer.content,
                )
            )
            self.send_response(answer.status_code)
            for name in ("Content-Type", "X-Request-Id", "Retry-After"):
                if name in answer.headers:
                    self.send_header(name, answer.headers[name])
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = _forward  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    record.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield record
    server.shutdown()
    server.server_close()


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VANTA_")}
    return {**env, **extra}


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def rws(
    environment: str,
    pattern: str,
    command: list[str],
    *,
    token: str | None = None,
    inject_as: str | None = None,
    masking: bool = True,
) -> list[str]:
    """The argv of `vanta-cli run-with-secrets ... -- command`."""
    args = [VANTA_CLI, "run-with-secrets", "--environment", environment, "--key-pattern", pattern]
    if token is not None:
        args += ["--token", token]
    if inject_as is not None:
        args += ["--inject-as", inject_as]
    if not masking:
        args.append("--no-masking")
    return [*args, "--", *command]


def rws_args(*options: str, command: list[str]) -> list[str]:
    """The argv of `vanta-cli run-with-secrets OPTIONS... -- command`."""
    return [VANTA_CLI, "run-with-secrets", *options, "--", *command]


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def touch(marker: Path) -> list[str]:
    """A command whose only effect is to create `marker`."""
    return python(f"open({str(marker)!r}, 'w')")


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def assert_no_values(text: str, values: dict) -> None:
    for value in values.values():
        if isinstance(value, str) and len(value) >= 3:
            assert value not in text


DUMP_ENV = "import json, os, sys; json.dump(dict(os.environ), sys.stdout)"


def expired_token(seconds_ago: int, permissions: tuple[str, ...] = READER) -> str:
    now = int(time.time())
    claims = {
        "iss": "vanta-vault",
        "aud": "vanta-vault-api",
        "sub": "old",
        "iat": now - 3600,
        "nbf": now - 3600,
        "exp": now - seconds_ago,
        "jti": "expired-jti-0123456789abcdef",
        "scope": {"environment": "dev", "key_pattern": "*", "permissions": list(permissions)},
        "usage_limit": None,
    }
    return jwt.encode(claims, SIGNING_KEY, algorithm="HS256")
