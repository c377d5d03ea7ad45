"""Git repositories whose commits are backdated, for rotation ages."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .repos import SOPS_BIN, SecretsRepo, make_secrets_repo

POLICY = """\
rotation:
  default_max_age_days: 90
  warn_days: 14
  rules:
    - environment: prod
      key_pattern: "DATABASE_*"
      max_age_days: 30
    - environment: prod
      key_pattern: "API_*"
      max_age_days: 30
      warn_days: 14
    - environment: dev
      max_age_days: 365
      warn_days: 30
"""


PROD = {"DATABASE_URL": "postgres://prod-db-secret", "API_KEY": "prod-api-secret", "LOG_LEVEL": "x"}


DEV = {"DATABASE_URL": "postgres://dev-db-secret", "API_KEYS": {"openai": "sk-dev-secret"}}


STAGING = {"API_TOKEN": "staging-token-secret"}


SECRET_VALUES = (
    "postgres://prod-db-secret",
    "prod-api-secret",
    "rotated-api-secret",
    "postgres://dev-db-secret",
    "sk-dev-secret",
    "staging-token-secret",
)


def git_date(days_ago: float) -> str:
    moment = datetime.now(UTC) - timedelta(days=days_ago, hours=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def sops_set(repo: SecretsRepo, environment: str, key: str, value: str, key_file: Path) -> None:
    """Change one value the way `sops set` does: the other values keep their ciphertext."""
    path = "".join(f'["{segment}"]' for segment in key.split("/"))
    subprocess.run(
        [SOPS_BIN, "set", f"secrets/{environment}.enc.yaml", path, json.dumps(value)],
        cwd=repo.path,
        env={**os.environ, "SOPS_AGE_KEY_FILE": str(key_file)},
        capture_output=True,
        check=True,
    )


@dataclass
class AgedRepo:
    repo: SecretsRepo
    first: str  # 100 days ago: prod and dev
    staging: str  # 80 days ago: staging
    api_key: str  # 20 days ago: prod API_KEY
    log_level: str  # 5 days ago: prod LOG_LEVEL


def build_aged_repo(path: Path, recipient: str, key_file: Path) -> AgedRepo:
    """prod: DATABASE_URL 100 days old (rule 30: overdue), API_KEY 20 (rule 30/14: due),
    LOG_LEVEL 5 (default 90: ok); dev: 100 days old under a 365-day rule (ok); staging:
    API_TOKEN 80 days old (default 90/14: due)."""
    repo = make_secrets_repo(path, recipient)
    (repo.path / ".vanta.yaml").write_text(POLICY)
    repo.write("prod", PROD)
    repo.write("dev", DEV)
    first = repo.commit("secrets: prod and dev", date=git_date(100))
    repo.write("staging", STAGING)
    staging = repo.commit("secrets: staging", date=git_date(80))
    sops_set(repo, "prod", "API_KEY", "rotated-api-secret", key_file)
    api_key = repo.commit("prod: rotate API_KEY", date=git_date(20))
    sops_set(repo, "prod", "LOG_LEVEL", "y", key_file)
    log_level = repo.commit("prod: LOG_LEVEL", date=git_date(5))
    return AgedRepo(repo, first, staging, api_key, log_level)
