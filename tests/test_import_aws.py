"""vanta-cli import aws (SPEC §13) against moto's server, reached the way a user points
boto3 at a local endpoint (AWS_ENDPOINT_URL), on real Git repositories with real sops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import requests
from click.testing import CliRunner
from moto.server import ThreadedMotoServer
from support.agekeys import generate_age_key
from support.brokers import free_port
from support.repos import DEV_SECRETS, PROD_SECRETS, SOPS_BIN, git

import cli
from broker.store import history
from cli.commands.import_ import import_

ROOT = Path(cli.__file__).resolve().parent.parent
SECRET_VALUES = ["p@ss w0rd!", "sk-live-abc123", "hunter2-plain", "legacy-only-value"]


@pytest.fixture(scope="module")
def moto_server():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(moto_server, monkeypatch, tmp_path):
    """A Secrets Manager client on a fresh moto; the CLI finds it through the environment."""
    requests.post(f"{moto_server}/moto-api/reset", timeout=10).raise_for_status()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return boto3.client("secretsmanager")


def put(aws, name: str, value: object) -> None:
    if isinstance(value, bytes):
        aws.create_secret(Name=name, SecretBinary=value)
    else:
        text = value if isinstance(value, str) else json.dumps(value)
        aws.create_secret(Name=name, SecretString=text)


def invoke(repo, *args: str):
    result = CliRunner().invoke(import_, ["aws", *args, "--repo", str(repo.path)])
    for value in SECRET_VALUES:
        assert value not in result.output and value not in result.stderr
    return result


def decrypt(repo, environment: str) -> dict:
    out = subprocess.run(
        [SOPS_BIN, "decrypt", "--output-type", "json", f"secrets/{environment}.enc.yaml"],
        cwd=repo.path,
        capture_output=True,
        check=True,
    ).stdout
    return json.loads(out)


def head(repo) -> str:
    return git(repo.path, "rev-parse", "HEAD")


def leaves(repo, environment: str) -> dict:
    return history.ciphertext_leaves((repo.secrets_dir / f"{environment}.enc.yaml").read_bytes())


# -- what becomes what ----------------------------------------------------------------------


def test_json_and_plain_secrets_become_keys_in_one_commit(aws, secrets_repo):
    put(
        aws,
        "prod/db",
        {
            "user": "app",
            "password": "p@ss w0rd!",
            "port": 5432,
            "ssl": True,
            "ratio": 0.25,
            "replica": {"host": "db-2", "weight": 3},
            "tags": ["a", "b"],
            "note": None,
        },
    )
    put(aws, "prod/STRIPE_KEY", "sk-live-abc123")
    put(aws, "prod/odd name+x", "hunter2-plain")
    put(aws, "prod/a-list", '["not", "an", "object"]')
    put(aws, "prod/cert", b"\x00\x01binary")
    put(aws, "Prod/CASE", "other case")  # the prefix is case-sensitive
    put(aws, "staging/NOT_MINE", "staging")
    base = head(secrets_repo)
    before = leaves(secrets_repo, "dev")

    result = invoke(secrets_repo, "--environment", "dev", "--prefix", "prod/")

    assert result.exit_code == 0, result.stderr
    assert git(secrets_repo.path, "rev-list", f"{base}..HEAD").split() == [head(secrets_repo)]
    assert decrypt(secrets_repo, "dev") == {
        **DEV_SECRETS,
        "db": {
            "user": "app",
            "password": "p@ss w0rd!",
            "port": 5432,
            "ssl": True,
            "ratio": 0.25,
            "replica": {"host": "db-2", "weight": 3},
        },
        "STRIPE_KEY": "sk-live-abc123",
        "odd_name_x": "hunter2-plain",
        "a-list": '["not", "an", "object"]',
    }
    after = leaves(secrets_repo, "dev")
    assert {k: after[k] for k in before} == before  # other keys' ciphertext untouched
    message = git(secrets_repo.path, "log", "-1", "--format=%B")
    assert message.splitlines()[0] == "dev: import 10 keys from AWS Secrets Manager"
    assert "db/password" in message and "STRIPE_KEY" in message
    assert not any(v in message for v in SECRET_VALUES + ["5432", "db-2"])
    assert "'prod/cert'" in result.stderr and "binary" in result.stderr
    assert "'prod/db' field 'tags': an array" in result.stderr
    assert "'prod/db' field 'note': null" in result.stderr
    assert git(secrets_repo.path, "status", "--porcelain") == ""


def test_a_secret_named_by_the_prefix_gives_its_fields_as_keys(aws, secrets_repo):
    put(aws, "legacy/app-config", {"LOG_LEVEL": "debug", "WORKERS": 4})
    put(aws, "legacy/app-config-extra", "legacy-only-value")
    result = invoke(secrets_repo, "--environment", "qa", "--prefix", "legacy/app-config")
    assert result.exit_code == 0, result.stderr
    assert decrypt(secrets_repo, "qa") == {
        "LOG_LEVEL": "debug",
        "WORKERS": 4,
        "-extra": "legacy-only-value",
    }


def test_a_new_environment_file_follows_the_sops_yaml_rules(aws, secrets_repo):
    other = generate_age_key()
    (secrets_repo.path / ".sops.yaml").write_text(
        "creation_rules:\n"
        "  - path_regex: (^|/)secrets/legacy\\.enc\\.yaml$\n"
        f"    age: {secrets_repo.recipient},{other.recipient}\n"
        "  - path_regex: (^|/)secrets/[^/]+\\.enc\\.yaml$\n"
        f"    age: {secrets_repo.recipient}\n"
    )
    secrets_repo.commit("sops: legacy is shared with the ops key")
    put(aws, "prod/A", "legacy-only-value")
    put(aws, "prod/B", "hunter2-plain")
    assert invoke(secrets_repo, "--environment", "legacy", "--prefix", "prod/").exit_code == 0
    text = (secrets_repo.secrets_dir / "legacy.enc.yaml").read_text()
    assert other.recipient in text and secrets_repo.recipient in text
    assert "legacy-only-value" not in text
    assert git(secrets_repo.path, "ls-files", "secrets/legacy.enc.yaml") == (
        "secrets/legacy.enc.yaml"
    )
    assert decrypt(secrets_repo, "legacy") == {"A": "legacy-only-value", "B": "hunter2-plain"}


# -- conflicts ----------------------------------------------------------------------------------


def test_an_existing_key_is_a_conflict_and_nothing_is_written(aws, secrets_repo):
    put(aws, "prod/API_KEY", "sk-live-abc123")
    put(aws, "prod/NEW_KEY", "hunter2-plain")
    base = head(secrets_repo)
    file_before = (secrets_repo.secrets_dir / "prod.enc.yaml").read_bytes()
    result = invoke(secrets_repo, "--environment", "prod", "--prefix", "prod/")
    assert result.exit_code == 1
    assert "conflict: API_KEY: already in secrets/prod.enc.yaml" in result.stderr
    assert "--overwrite" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: nothing written: 1 conflict"
    assert head(secrets_repo) == base
    assert (secrets_repo.secrets_dir / "prod.enc.yaml").read_bytes() == file_before
    assert git(secrets_repo.path, "status", "--porcelain") == ""


def test_overwrite_replaces_existing_keys_and_keeps_the_others_ciphertext(aws, secrets_repo):
    put(aws, "prod/API_KEY", "sk-live-abc123")
    before = leaves(secrets_repo, "prod")
    result = invoke(secrets_repo, "--environment", "prod", "--prefix", "prod/", "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert decrypt(secrets_repo, "prod") == {**PROD_SECRETS, "API_KEY": "sk-live-abc123"}
    after = leaves(secrets_repo, "prod")
    assert after["DATABASE_URL"] == before["DATABASE_URL"]
    assert after["API_KEY"] != before["API_KEY"]
    subject = git(secrets_repo.path, "log", "-1", "--format=%s")
    assert subject == "prod: import 1 key from AWS Secrets Manager"


@pytest.mark.parametrize(
    ("secrets", "expected"),
    [
        (
            {"prod/a+b": "x1", "prod/a=b": "x2"},
            "a_b: both secret 'prod/a+b' and secret 'prod/a=b' become it",
        ),
        (
            {"prod/db": "x1", "prod/db/user": "x2"},
            "db: would be a value (secret 'prod/db') and a group of keys (db/user",
        ),
        ({"prod/db": "x1", "prod/db-json": {"x": 1}}, None),
        ({"prod/API_KEYS": "x1"}, "API_KEYS: a group of keys in secrets/dev.enc.yaml"),
        ({"prod/PORT/inner": "x1"}, "PORT/inner: PORT is a value in secrets/dev.enc.yaml"),
    ],
)
def test_names_that_collide_or_nest_are_conflicts_even_with_overwrite(
    aws, secrets_repo, secrets, expected
):
    for name, value in secrets.items():
        put(aws, name, value)
    base = head(secrets_repo)
    result = invoke(secrets_repo, "--environment", "dev", "--prefix", "prod/", "--overwrite")
    if expected is None:  # the control: these do not collide
        assert result.exit_code == 0, result.stderr
        return
    assert result.exit_code == 1 and f"conflict: {expected}" in result.stderr
    assert head(secrets_repo) == base
    assert git(secrets_repo.path, "status", "--porcelain") == ""


# -- dry run, no commit ---------------------------------------------------------------------------


def test_dry_run_lists_keys_and_conflicts_writes_nothing_and_exits_as_the_real_run(
    aws, secrets_repo
):
    put(aws, "prod/STRIPE_KEY", "sk-live-abc123")
    put(aws, "prod/db", {"password": "p@ss w0rd!"})
    base = head(secrets_repo)
    clean = invoke(secrets_repo, "--environment", "dev", "--prefix", "prod/", "--dry-run")
    assert clean.exit_code == 0, clean.stderr
    assert "+ STRIPE_KEY" in clean.output and "+ db/password" in clean.output
    assert "dry run: nothing written" in clean.output
    put(aws, "prod/PORT", "9999")
    conflicted = invoke(secrets_repo, "--environment", "dev", "--prefix", "prod/", "--dry-run")
    assert conflicted.exit_code == 1 and "conflict: PORT: already in" in conflicted.stderr
    assert "9999" not in conflicted.output + conflicted.stderr
    overwrite = invoke(
        secrets_repo, "--environment", "dev", "--prefix", "prod/", "--dry-run", "--overwrite"
    )
    assert overwrite.exit_code == 0 and "~ PORT" in overwrite.output
    assert head(secrets_repo) == base
    assert git(secrets_repo.path, "status", "--porcelain") == ""
    assert decrypt(secrets_repo, "dev") == DEV_SECRETS


def test_no_commit_leaves_the_whole_import_staged(aws, secrets_repo):
    put(aws, "prod/A", "legacy-only-value")
    put(aws, "prod/B", "hunter2-plain")
    base = head(secrets_repo)
    result = invoke(secrets_repo, "--environment", "dev", "--prefix", "prod/", "--no-commit")
    assert result.exit_code == 0, result.stderr
    assert head(secrets_repo) == base
    assert git(secrets_repo.path, "diff", "--cached", "--name-only") == "secrets/dev.enc.yaml"
    assert decrypt(secrets_repo, "dev") == {
        **DEV_SECRETS,
        "A": "legacy-only-value",
        "B": "hunter2-plain",
    }


def test_uncommitted_changes_stop_a_committing_import(aws, secrets_repo):
    put(aws, "prod/A", "legacy-only-value")
    path = secrets_repo.secrets_dir / "dev.enc.yaml"
    path.write_text(path.read_text() + "\n")
    for args in ([], ["--dry-run"]):
        result = invoke(secrets_repo, "--environment", "dev", "--prefix", "prod/", *args)
        assert result.exit_code == 1 and "uncommitted changes" in result.stderr


def test_a_failure_half_way_puts_the_file_back(aws, secrets_repo, monkeypatch, tmp_path):
    put(aws, "prod/A", "legacy-only-value")
    put(aws, "prod/B", "hunter2-plain")
    before = (secrets_repo.secrets_dir / "dev.enc.yaml").read_bytes()
    calls = tmp_path / "calls"
    wrapper = tmp_path / "sops"  # the real sops, failing on its second `set`
    wrapper.write_text(
        "#!/bin/sh\n"
        f'echo x >> "{calls}"\n'
        f'if [ "$1" = set ] && [ "$(wc -l < "{calls}")" -ge 2 ]; then exit 3; fi\n'
        f'exec "{SOPS_BIN}" "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("VANTA_SOPS_BIN", str(wrapper))
    result = invoke(secrets_repo, "--environment", "dev", "--prefix", "prod/")
    assert result.exit_code == 1 and "sops set secrets/dev.enc.yaml failed" in result.stderr
    assert (secrets_repo.secrets_dir / "dev.enc.yaml").read_bytes() == before
    assert git(secrets_repo.path, "status", "--porcelain") == ""


# -- AWS itself ------------------------------------------------------------------------------------


def test_nothing_under_the_prefix_is_an_error(aws, secrets_repo):
    put(aws, "staging/A", "x")
    result = invoke(secrets_repo, "--environment", "dev", "--prefix", "prod/")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: nothing to import from AWS Secrets Manager"


def test_aws_failures_are_one_line(aws, secrets_repo, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    result = invoke(secrets_repo, "--environment", "dev")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: AWS: Could not connect to the endpoint URL")
    assert len(result.stderr.strip().splitlines()) == 1
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    result = invoke(secrets_repo, "--environment", "dev")
    assert result.exit_code == 1 and "error: AWS: no region" in result.stderr


def test_the_command_runs_as_its_own_process(aws, secrets_repo):
    put(aws, "prod/A", "legacy-only-value")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cli.commands.import_ import import_; import_()",
            "aws",
            "--environment",
            "dev",
            "--prefix",
            "prod/",
            "--repo",
            str(secrets_repo.path),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("committed ")
    assert decrypt(secrets_repo, "dev")["A"] == "legacy-only-value"


def test_after_the_import_boto3_style_code_reads_the_same_json(
    aws, secrets_repo, running_broker, config
):
    from support.tokens import make_token

    from cli.client import VaultClient

    original = {"username": "app", "password": "p@ss w0rd!", "port": 5432, "ssl": True}
    put(aws, "prod/rds", original)
    assert invoke(secrets_repo, "--environment", "prod", "--prefix", "prod/").exit_code == 0
    before = json.loads(aws.get_secret_value(SecretId="prod/rds")["SecretString"])

    # client = boto3.client("secretsmanager")  became:
    client = VaultClient(running_broker.url, make_token(config, environment="prod"), environ={})
    answer = client.get_secret_value(SecretId="prod/rds")

    assert json.loads(answer["SecretString"]) == before == original
    assert answer["Name"] == "prod/rds" and answer["VersionId"] == head(secrets_repo)
    assert answer["VersionStages"] == ["AWSCURRENT"]
    assert client.get_secret_value(SecretId="prod/rds/port")["SecretString"] == "5432"
