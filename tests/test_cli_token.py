"""vanta-cli token generate: through a real broker, and offline with the signing key."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
import requests
from click.testing import CliRunner
from support.brokers import free_port
from support.repos import SIGNING_KEY
from support.tokens import bearer, make_token

from cli.main import cli

VANTA_CLI = str(Path(sys.executable).parent / "vanta-cli")
ISSUER_PERMS = ("secrets:read", "secrets:list", "tokens:issue")
OTHER_KEY = "another-signing-key-0123456789-abcdefghijkl"


def generate(*args: str, env: dict[str, str] | None = None):
    runner = CliRunner()
    return runner.invoke(cli, ["token", "generate", *args], env=env, catch_exceptions=False)


def field(output: str, name: str) -> str:
    for line in output.splitlines():
        label, _, value = line.partition(":")
        if label == name:
            return value.strip()
    raise AssertionError(f"no {name!r} line in {output!r}")


# -- offline -------------------------------------------------------------------------------


def test_offline_signs_with_the_key_and_prints_token_and_scope():
    result = generate(
        "--offline",
        "--subject",
        "ops",
        "--environment",
        "*",
        "--key-pattern",
        "*",
        "--permission",
        "tokens:issue",
        "--permission",
        "secrets:read",
        "--ttl",
        "60",
        "--usage-limit",
        "3",
        env={"VANTA_JWT_SECRET_KEY": SIGNING_KEY},
    )
    assert result.exit_code == 0, result.output
    token = field(result.stdout, "token")
    claims = jwt.decode(token, SIGNING_KEY, algorithms=["HS256"], audience="vanta-vault-api")
    assert claims["iss"] == "vanta-vault" and claims["sub"] == "ops"
    assert claims["scope"] == {
        "environment": "*",
        "key_pattern": "*",
        "permissions": ["secrets:read", "tokens:issue"],
    }
    assert claims["usage_limit"] == 3 and claims["exp"] - claims["iat"] == 3600
    assert "kid" not in jwt.get_unverified_header(token)
    assert field(result.stdout, "subject") == "ops"
    assert field(result.stdout, "permissions") == "secrets:read, tokens:issue"
    assert field(result.stdout, "usage limit") == "3"
    assert field(result.stdout, "jti") == claims["jti"]
    expires = result.stdout.split("expires:", 1)[1].splitlines()[0].strip()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in (1h 00m|59m \d\ds)\)", expires)


def test_offline_json_has_the_broker_answer_shape_and_the_broker_accepts_it(running_broker, config):
    offline = generate(
        "--offline",
        "--json",
        "--subject",
        "svc",
        "--environment",
        "dev",
        "--key-pattern",
        "DATABASE_*",
        env={"VANTA_JWT_SECRET_KEY": SIGNING_KEY},
    )
    assert offline.exit_code == 0, offline.output
    answer = json.loads(offline.stdout)
    issuer = make_token(config, permissions=ISSUER_PERMS)
    online = requests.post(
        f"{running_broker.url}/api/v1/vault/tokens/generate",
        json={"subject": "svc", "environment": "dev", "key_pattern": "DATABASE_*"},
        headers=bearer(issuer),
        timeout=10,
    ).json()
    assert list(answer) == list(online)
    assert list(answer["scope_details"]) == list(online["scope_details"])
    assert answer["scope_details"]["permissions"] == ["secrets:read"]
    assert answer["expires_in"] == 900
    # printed as the broker prints it: compact JSON, one line
    assert offline.stdout == json.dumps(answer, separators=(",", ":")) + "\n"
    r = requests.get(
        f"{running_broker.url}/api/v1/vault/dev/DATABASE_USER",
        headers=bearer(answer["access_token"]),
        timeout=10,
    )
    assert r.status_code == 200 and r.json()["value"] == "app"


def test_offline_uses_the_first_of_several_keys_with_its_kid():
    result = generate(
        "--offline",
        "--json",
        "--subject",
        "ops",
        "--environment",
        "dev",
        "--key-pattern",
        "*",
        env={"VANTA_JWT_SECRET_KEYS": f"k2:{OTHER_KEY},k1:{SIGNING_KEY}"},
    )
    assert result.exit_code == 0, result.output
    token = json.loads(result.stdout)["access_token"]
    assert jwt.get_unverified_header(token)["kid"] == "k2"
    jwt.decode(token, OTHER_KEY, algorithms=["HS256"], audience="vanta-vault-api")


def test_offline_honours_issuer_audience_and_max_ttl():
    env = {
        "VANTA_JWT_SECRET_KEY": SIGNING_KEY,
        "VANTA_JWT_ISSUER": "acme-vault",
        "VANTA_JWT_AUDIENCE": "acme-api",
        "VANTA_MAX_TTL_MINUTES": "30",
    }
    base = ["--offline", "--json", "--subject", "s", "--environment", "dev", "--key-pattern", "*"]
    ok = generate(*base, "--ttl", "30", env=env)
    assert ok.exit_code == 0, ok.output
    claims = jwt.decode(
        json.loads(ok.stdout)["access_token"],
        SIGNING_KEY,
        algorithms=["HS256"],
        audience="acme-api",
        issuer="acme-vault",
    )
    assert claims["exp"] - claims["iat"] == 1800
    too_long = generate(*base, "--ttl", "31", env=env)
    assert too_long.exit_code == 1 and too_long.stdout == ""
    assert too_long.stderr == (
        "error: 400 bad_request: --ttl must be a whole number from 1 to 30\n"
    )


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--environment", "../etc", "'../etc' is not an environment name: lower-case letters"),
        ("--key-pattern", "a b", "'a b' is not a key pattern: a key glob"),
        ("--subject", "x" * 129, "must be 1 to 128 printable characters"),
    ],
)
def test_a_bad_name_is_a_usage_error_naming_the_flag_typed_not_a_field_or_regex(flag, value, said):
    args = {"--subject": "s", "--environment": "dev", "--key-pattern": "*", flag: value}
    result = generate(
        "--offline",
        *(part for pair in args.items() for part in pair),
        env={"VANTA_JWT_SECRET_KEY": SIGNING_KEY},
    )
    assert result.exit_code == 2 and result.stdout == ""
    assert f"Invalid value for '{flag}': {said}" in result.stderr
    assert "^[" not in result.stderr and "key_pattern" not in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "set exactly one of VANTA_JWT_SECRET_KEY and VANTA_JWT_SECRET_KEYS"),
        ({"VANTA_JWT_SECRET_KEY": "short"}, "VANTA_JWT_SECRET_KEY must be at least 32 bytes"),
        (
            {"VANTA_JWT_SECRET_KEY": SIGNING_KEY, "VANTA_MAX_TTL_MINUTES": "lots"},
            "VANTA_MAX_TTL_MINUTES must be a whole number",
        ),
    ],
)
def test_offline_without_a_usable_key_is_one_line_naming_the_variable(env, message):
    result = generate(
        "--offline", "--subject", "s", "--environment", "dev", "--key-pattern", "*", env=env
    )
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith(f"error: {message}")
    assert len(result.stderr.splitlines()) == 1
    assert "short" not in result.stderr


# -- through the broker -----------------------------------------------------------------------


def test_broker_mints_inside_the_issuer_with_env_url_and_token(running_broker, config):
    issuer = make_token(config, environment="prod", key_pattern="*", permissions=ISSUER_PERMS)
    result = generate(
        "--subject",
        "billing-api",
        "--environment",
        "prod",
        "--key-pattern",
        "DATABASE_*",
        "--ttl",
        "5",
        "--usage-limit",
        "2",
        "--permission",
        "secrets:read",
        env={"VANTA_BROKER_URL": running_broker.url, "VANTA_TOKEN": issuer},
    )
    assert result.exit_code == 0, result.output
    assert field(result.stdout, "environment") == "prod"
    assert field(result.stdout, "key pattern") == "DATABASE_*"
    assert field(result.stdout, "usage limit") == "2"
    assert re.search(
        r"\(in (4m \d\ds|5m 00s)\)$", result.stdout.split("expires:")[1].splitlines()[0]
    )
    token = field(result.stdout, "token")
    r = requests.get(
        f"{running_broker.url}/api/v1/vault/prod/DATABASE_URL", headers=bearer(token), timeout=10
    )
    assert r.status_code == 200


def test_json_prints_the_broker_answer_exactly(running_broker, config):
    issuer = make_token(config, permissions=ISSUER_PERMS)
    result = generate(
        "--json",
        "--subject",
        "svc",
        "--environment",
        "dev",
        "--key-pattern",
        "*",
        "--broker-url",
        running_broker.url,
        "--token",
        issuer,
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    # the broker's own bytes: compact orjson, key order as sent
    assert result.stdout == json.dumps(answer, separators=(",", ":")) + "\n"
    assert list(answer) == ["access_token", "token_type", "expires_in", "scope_details"]
    claims = jwt.decode(
        answer["access_token"], SIGNING_KEY, algorithms=["HS256"], audience="vanta-vault-api"
    )
    assert claims["jti"] == answer["scope_details"]["jti"]


def test_scope_denied_is_one_line_on_stderr_and_exit_1(running_broker, config):
    issuer = make_token(config, environment="dev", permissions=ISSUER_PERMS)
    proc = subprocess.run(
        [
            VANTA_CLI,
            "token",
            "generate",
            "--subject",
            "s",
            "--environment",
            "prod",
            "--key-pattern",
            "*",
        ],
        env={"VANTA_BROKER_URL": running_broker.url, "VANTA_TOKEN": issuer, "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith(
        "error: 403 scope_denied: the environment is outside the issuer's scope"
    )
    assert len(proc.stderr.splitlines()) == 1 and issuer not in proc.stderr


def test_issuer_without_tokens_issue_is_permission_denied(running_broker, config):
    reader = make_token(config, permissions=("secrets:read",))
    result = generate(
        "--subject",
        "s",
        "--environment",
        "dev",
        "--key-pattern",
        "*",
        env={"VANTA_BROKER_URL": running_broker.url, "VANTA_TOKEN": reader},
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: 403 permission_denied: the token lacks tokens:issue")


def test_unreachable_broker_is_one_line_and_exit_1():
    url = f"http://127.0.0.1:{free_port()}"
    result = generate(
        *("--subject", "s", "--environment", "dev", "--key-pattern", "*", "--broker-url", url),
        env={"VANTA_TOKEN": "some-token"},
    )
    assert result.exit_code == 1
    assert result.stderr == f"error: cannot reach the broker at {url}: connection refused\n"


def test_without_an_issuer_token_says_how_to_get_one():
    result = generate("--subject", "s", "--environment", "dev", "--key-pattern", "*")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no issuer token: set VANTA_TOKEN or give --token-file")


# -- usage ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--environment", "dev", "--key-pattern", "*"],  # no --subject
        ["--subject", "s", "--environment", "dev", "--key-pattern", "*", "--permission", "root"],
        ["--subject", "s", "--environment", "dev", "--key-pattern", "*", "--ttl", "0"],
        ["--subject", "s", "--environment", "dev", "--key-pattern", "*", "--usage-limit", "x"],
    ],
)
def test_usage_errors_exit_2(args):
    assert generate(*args).exit_code == 2


def test_help_explains_options_with_an_example():
    result = CliRunner().invoke(cli, ["token", "generate", "--help"])
    assert result.exit_code == 0
    for option in ("--subject", "--usage-limit", "--permission", "--offline", "--json"):
        assert option in result.stdout
    assert "Examples:" in result.stdout and "vanta-cli token generate --offline" in result.stdout
    assert "VANTA_TOKEN" in result.stdout and "VANTA_BROKER_URL" in result.stdout
