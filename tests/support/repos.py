"""Real Git repositories of real SOPS files, and the names and values they hold."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.config import default_sops_bin

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
