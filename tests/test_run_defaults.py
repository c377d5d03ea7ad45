"""`.vanta.yaml` defaults for `vanta-cli run` (the alias of run-with-secrets), like
`doppler setup`: the nearest file names the environment and key pattern; options win."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import ISSUER, Broker, cli_env, python, serve_secrets
from support.repos import DEV_SECRETS

from broker.store.rotation import parse_policy
from cli.project_defaults import Defaults, DefaultsError, load_defaults

VANTA_CLI = str(Path(sys.executable).parent / "vanta-cli")
DUMP = "import json, os; print(json.dumps(sorted(k for k in os.environ if k in {}), indent=None))"
NAMES = ("DATABASE_URL", "DATABASE_USER", "PORT", "DEBUG", "API_KEYS_OPENAI", "API_KEYS_STRIPE")


@pytest.fixture(scope="module")
def broker(tmp_path_factory, age_key, age_key_file) -> Iterator[Broker]:
    root = tmp_path_factory.mktemp("defaults")
    with serve_secrets(root, age_key, age_key_file, dev=DEV_SECRETS, prod={"PORT": 1}) as running:
        yield running


def project(tmp_path: Path, text: str | None) -> Path:
    """A project with `.vanta.yaml` holding `text`, and a directory below it to run in."""
    below = tmp_path / "project" / "src"
    below.mkdir(parents=True)
    if text is not None:
        (tmp_path / "project" / ".vanta.yaml").write_text(text)
    return below


def run_in(cwd: Path, broker: Broker, *args: str) -> subprocess.CompletedProcess[str]:
    issuer = broker.token(permissions=ISSUER)
    command = python(DUMP.replace("{}", repr(set(NAMES))))
    return subprocess.run(
        [VANTA_CLI, "run", *args, "--", *command],
        cwd=cwd,
        env=cli_env(VANTA_BROKER_URL=broker.url, VANTA_TOKEN=issuer),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_takes_environment_and_pattern_from_the_nearest_vanta_yaml(broker, tmp_path):
    cwd = project(tmp_path, 'defaults:\n  environment: dev\n  key_pattern: "DATABASE_*"\n')
    proc = run_in(cwd, broker)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["DATABASE_URL", "DATABASE_USER"]
    source = tmp_path / "project" / ".vanta.yaml"
    assert f"vanta: environment dev and key pattern DATABASE_* from {source}\n" in proc.stderr


def test_options_win_over_the_defaults(broker, tmp_path):
    cwd = project(tmp_path, 'defaults:\n  environment: prod\n  key_pattern: "DATABASE_*"\n')
    proc = run_in(cwd, broker, "--environment", "dev", "--key-pattern", "PORT")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["PORT"] and ".vanta.yaml" not in proc.stderr
    one = run_in(cwd, broker, "--key-pattern", "API_KEYS/*")  # the environment still defaults
    assert one.returncode == 1 and "no key in prod matches 'API_KEYS/*'" in one.stderr
    assert "vanta: environment prod from " in one.stderr


def test_a_template_alone_uses_no_default(broker, tmp_path):
    cwd = project(tmp_path, 'defaults:\n  environment: dev\n  key_pattern: "*"\n')
    (cwd / "app.env").write_text("PORT=secretref://prod/PORT\n")
    proc = run_in(cwd, broker, "--env-file", "app.env")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["PORT"] and ".vanta.yaml" not in proc.stderr


def test_without_defaults_it_says_where_to_name_them(broker, tmp_path):
    cwd = project(tmp_path, "rotation:\n  default_max_age_days: 30\n")  # nearest: no defaults
    proc = run_in(cwd, broker)
    assert proc.returncode == 2
    assert "give --environment and --key-pattern, or --env-file (or name defaults in" in (
        proc.stderr
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("defaults:\n  enviroment: dev\n", "defaults: unknown field 'enviroment'"),
        ("defaults:\n  environment: Dev\n", "defaults.environment: 'Dev' is not an environment"),
        ("defaults:\n  key_pattern: '[a-z]'\n", "defaults.key_pattern: '[a-z]' is not a key"),
        ("defaults: dev\n", "defaults must be a mapping"),
        ("defaults: [\n", "not valid YAML"),
    ],
)
def test_a_bad_defaults_section_is_one_line_naming_file_and_field(broker, tmp_path, text, error):
    cwd = project(tmp_path, text)
    proc = run_in(cwd, broker)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith(f"error: {tmp_path / 'project' / '.vanta.yaml'}: {error}")
    assert len(proc.stderr.splitlines()) == 1


def test_the_rotation_policy_and_the_defaults_share_the_file():
    text = "defaults:\n  environment: dev\nrotation:\n  default_max_age_days: 30\n  warn_days: 5\n"
    assert parse_policy(text).default_max_age_days == 30


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user takes root")
def test_a_file_owned_by_another_user_is_ignored_with_a_warning(tmp_path, capsys):
    cwd = project(tmp_path, "defaults:\n  environment: dev\n")
    os.chown(tmp_path / "project" / ".vanta.yaml", 65534, 65534)
    assert load_defaults(cwd) == Defaults()
    assert "ignoring" in capsys.readouterr().err


def test_load_defaults_finds_the_nearest_file_upwards(tmp_path):
    cwd = project(tmp_path, 'defaults:\n  environment: prod\n  key_pattern: "A*"\n')
    found = load_defaults(cwd)
    assert (found.environment, found.key_pattern) == ("prod", "A*")
    assert found.source == tmp_path / "project" / ".vanta.yaml"
    (cwd / ".vanta.yaml").write_text("defaults:\n  unknown: 1\n")
    with pytest.raises(DefaultsError):
        load_defaults(cwd)
