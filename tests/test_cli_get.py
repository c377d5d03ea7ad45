"""vanta-cli get ENV KEY: the value alone on stdout, the whole answer with --json, an older
commit with --version, the environment from .vanta.yaml; through a real broker process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests
from support.cli import READER, Broker, cli_env, expired_token, serve_secrets
from support.repos import DEV_SECRETS, git

VANTA_CLI = str(Path(sys.executable).parent / "vanta-cli")
MULTILINE = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def broker(tmp_path_factory, age_key, age_key_file) -> Iterator[Broker]:
    root = tmp_path_factory.mktemp("get")
    dev = {**DEV_SECRETS, "CERT": MULTILINE}
    with serve_secrets(root, age_key, age_key_file, dev=dev, prod={"API_KEY": "p"}) as running:
        yield running


def get(*args: str, token: str | None, cwd: Path | None = None, **env: str):
    extra = {"VANTA_TOKEN": token} if token is not None else {}
    return subprocess.run(
        [VANTA_CLI, "get", *args],
        env=cli_env(**extra, **env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_get_prints_the_value_alone_with_a_newline_and_no_token(broker):
    reader = broker.token(environment="dev", permissions=READER)
    proc = get("dev", "DATABASE_URL", token=reader, VANTA_BROKER_URL=broker.url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == DEV_SECRETS["DATABASE_URL"] + "\n"
    assert proc.stderr == ""


@pytest.mark.parametrize(
    ("key", "shown"),
    [("PORT", "8080\n"), ("DEBUG", "true\n"), ("API_KEYS/openai", "sk-test-openai\n")],
)
def test_numbers_booleans_and_nested_keys_print_as_yaml_writes_them(broker, key, shown):
    reader = broker.token(environment="dev", permissions=READER)
    proc = get("dev", key, token=reader, VANTA_BROKER_URL=broker.url)
    assert (proc.returncode, proc.stdout) == (0, shown), proc.stderr


def test_no_newline_keeps_a_value_byte_for_byte_for_a_file(broker, tmp_path):
    reader = broker.token(environment="dev", permissions=READER)
    proc = get("dev", "CERT", "-n", token=reader, VANTA_BROKER_URL=broker.url)
    assert proc.returncode == 0 and proc.stdout == MULTILINE


def test_json_is_the_brokers_whole_answer(broker):
    reader = broker.token(environment="dev", permissions=READER)
    proc = get("dev", "PORT", "--json", token=reader, VANTA_BROKER_URL=broker.url)
    assert proc.returncode == 0, proc.stderr
    api = requests.get(
        f"{broker.url}/api/v1/vault/dev/PORT", headers={"Authorization": f"Bearer {reader}"}
    ).json()
    assert json.loads(proc.stdout) == api
    assert api["version"] == broker.repo_commit and api["value"] == 8080


def test_version_reads_the_value_as_of_a_commit_and_cli_version_is_the_programs(broker):
    reader = broker.token(environment="dev", permissions=READER)
    assert broker.repo is not None
    broker.repo.write("dev", {**DEV_SECRETS, "CERT": MULTILINE, "DATABASE_URL": "postgres://new"})
    broker.repo.commit("dev: change DATABASE_URL")
    old = broker.repo_commit[:12]
    now = get("dev", "DATABASE_URL", token=reader, VANTA_BROKER_URL=broker.url)
    then = get("--version", old, "dev", "DATABASE_URL", token=reader, VANTA_BROKER_URL=broker.url)
    assert now.stdout == "postgres://new\n" and then.stdout == DEV_SECRETS["DATABASE_URL"] + "\n"
    program = subprocess.run([VANTA_CLI, "--version"], capture_output=True, text=True, timeout=60)
    assert program.returncode == 0 and program.stdout == "vanta-cli 0.1.0\n"


def test_a_version_that_is_not_a_commit_sha_is_a_usage_error_saying_how(broker):
    proc = get("dev", "PORT", "--version", "main", token="x", VANTA_BROKER_URL=broker.url)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Invalid value for '--version': 'main' is not a commit SHA" in proc.stderr
    assert '--version "$(git rev-parse main)"' in proc.stderr


def test_an_unknown_environment_names_the_ones_in_the_checkout(broker):
    reader = broker.token(permissions=READER)
    assert broker.repo is not None
    proc = get("dve", "PORT", token=reader, VANTA_BROKER_URL=broker.url, cwd=broker.repo.path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("error: 404 not_found: environment 'dve' not found")
    assert proc.stderr.endswith(
        f": the environments in {broker.repo.path} are dev, prod (did you mean dev?)\n"
    )


def test_a_bad_environment_name_is_a_usage_error_saying_the_rule_not_a_regex(broker):
    proc = get("Dev", "PORT", token="x", VANTA_BROKER_URL=broker.url)
    assert proc.returncode == 2
    assert "Invalid value for 'ENVIRONMENT': 'Dev' is not an environment name: lower-case" in (
        proc.stderr
    )
    assert "^[" not in proc.stderr


def test_an_expired_token_says_it_expired_and_when(broker):
    token = expired_token(seconds_ago=600)
    proc = get("dev", "PORT", token=token, VANTA_BROKER_URL=broker.url)
    assert proc.returncode == 1 and token not in proc.stderr
    expired_at = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(jwt.decode(
        token, options={"verify_signature": False})["exp"]))  # fmt: skip
    assert proc.stderr.startswith("error: 401 token_invalid: ")
    assert f": VANTA_TOKEN expired at {expired_at}" in proc.stderr
    assert "ago): get a new token" in proc.stderr


def test_a_token_read_within_the_leeway_after_exp_still_reads(broker):
    proc = get("dev", "PORT", token=expired_token(seconds_ago=5), VANTA_BROKER_URL=broker.url)
    assert (proc.returncode, proc.stdout) == (0, "8080\n"), proc.stderr


def test_token_file_gives_the_token_and_vanta_token_is_not_used(broker, tmp_path):
    reader = broker.token(environment="dev", permissions=READER)
    token_file = tmp_path / "reader.jwt"
    token_file.write_text(reader + "\n")
    proc = get("dev", "PORT", "--token-file", str(token_file), token="not-a-token",
               VANTA_BROKER_URL=broker.url)  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, "8080\n"), proc.stderr


def test_without_environment_the_one_in_vanta_yaml_is_used(broker, tmp_path):
    reader = broker.token(permissions=READER)
    project = tmp_path / "project" / "src"
    project.mkdir(parents=True)
    (tmp_path / "project" / ".vanta.yaml").write_text("defaults:\n  environment: prod\n")
    proc = get("API_KEY", token=reader, cwd=project, VANTA_BROKER_URL=broker.url)
    assert (proc.returncode, proc.stdout) == (0, "p\n"), proc.stderr
    explicit = get("dev", "PORT", token=reader, cwd=project, VANTA_BROKER_URL=broker.url)
    assert explicit.stdout == "8080\n"


def test_without_environment_or_a_default_it_says_where_to_name_one(tmp_path):
    git(tmp_path, "init", "-q")
    proc = get("PORT", token="x", cwd=tmp_path)
    assert proc.returncode == 2
    assert "give ENVIRONMENT KEY, or name a default environment in .vanta.yaml" in proc.stderr
