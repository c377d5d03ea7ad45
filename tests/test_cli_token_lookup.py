"""vanta-cli token lookup and token revoke, and what token generate says when the issuer
cannot mint or the environment does not exist; through a real broker process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.cli import ISSUER, READER, Broker, cli_env, expired_token, serve_secrets
from support.repos import DEV_SECRETS

from cli.client import TokenInvalid
from cli.tokens.hints import TokenSource, explain

VANTA_CLI = str(Path(sys.executable).parent / "vanta-cli")
ADMIN = ("secrets:read", "secrets:list", "tokens:issue", "audit:read")


@pytest.fixture(scope="module")
def broker(tmp_path_factory, age_key, age_key_file) -> Iterator[Broker]:
    root = tmp_path_factory.mktemp("lookup")
    with serve_secrets(root, age_key, age_key_file, dev=DEV_SECRETS, prod={"X": "y"}) as running:
        yield running


def cli(broker: Broker, *args: str, token: str | None, cwd: Path | None = None):
    env = cli_env(VANTA_BROKER_URL=broker.url, **({"VANTA_TOKEN": token} if token else {}))
    return subprocess.run(
        [VANTA_CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def read(broker: Broker, token: str, key: str = "PORT") -> requests.Response:
    return requests.get(
        f"{broker.url}/api/v1/vault/dev/{key}", headers={"Authorization": f"Bearer {token}"}
    )


def rows(output: str) -> dict[str, str]:
    return {
        label: value.strip()
        for label, _, value in (line.partition(":") for line in output.splitlines())
    }


# -- lookup ------------------------------------------------------------------------------------


def test_lookup_shows_scope_and_expiry_and_the_brokers_word_never_the_token(broker):
    token = broker.token(environment="dev", key_pattern="API_KEYS/*", permissions=READER,
                         usage_limit=3, subject="billing-api")  # fmt: skip
    proc = cli(broker, "token", "lookup", token=token)
    assert proc.returncode == 0, proc.stderr
    assert token not in proc.stdout + proc.stderr
    shown = rows(proc.stdout)
    assert shown["subject"] == "billing-api"
    assert shown["environment"] == "dev" and shown["key pattern"] == "API_KEYS/*"
    assert shown["permissions"] == "secrets:read, secrets:list"
    assert shown["usage limit"] == "3" and shown["uses left"] == "not reported (at most 3)"
    assert shown["expires"].endswith(("(in 15m 00s)", "(in 14m 59s)", "(in 14m 58s)"))
    assert shown["broker"] == f"accepted by {broker.url}"
    for _ in range(3):  # the lookup used none of its three reads
        assert read(broker, token, "API_KEYS/openai").status_code == 200


def test_lookup_json_gives_the_same_details(broker):
    token = broker.token(permissions=ADMIN, subject="ops")
    proc = cli(broker, "token", "lookup", "--json", token=token, cwd=broker.repo.path)
    assert proc.returncode == 0, proc.stderr
    details = json.loads(proc.stdout)
    assert details["environment"] == "*" and details["permissions"] == list(ADMIN)
    assert details["usage_limit"] is None and details["expired"] is False
    assert details["broker"] == {"url": broker.url, "status": "accepted", "error": None}


def test_lookup_of_a_revoked_token_says_so_and_exits_1(broker):
    token = broker.token(environment="dev", permissions=READER)
    assert cli(broker, "token", "revoke", "--self", token=token).returncode == 0
    proc = cli(broker, "token", "lookup", token=token)
    assert proc.returncode == 1
    assert rows(proc.stdout)["broker"] == f"revoked ({broker.url})"
    assert proc.stderr.startswith("error: 403 token_revoked: ")


def test_lookup_of_an_expired_token_says_when_it_expired(broker):
    proc = cli(broker, "token", "lookup", token=expired_token(seconds_ago=120))
    assert proc.returncode == 1
    assert "(expired 2m" in rows(proc.stdout)["expires"]
    assert rows(proc.stdout)["broker"] == f"refused by {broker.url}"
    assert "VANTA_TOKEN expired at " in proc.stderr and "ago): get a new token" in proc.stderr


def test_lookup_of_something_that_is_not_a_token_is_one_line(broker):
    proc = cli(broker, "token", "lookup", token="not-a-jwt")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == "error: VANTA_TOKEN is not a Vanta token (a JWT with a scope)\n"


# -- revoke ------------------------------------------------------------------------------------


def test_revoke_by_jti_with_an_issuer_ends_the_token_at_once(broker):
    issuer = broker.token(environment="dev", permissions=ISSUER)
    victim = broker.token(environment="*", permissions=ADMIN)
    minted = cli(broker, "token", "generate", "--subject", "leaked", "--environment", "dev",
                 "--key-pattern", "*", "--json", token=victim)  # fmt: skip
    assert minted.returncode == 0, minted.stderr
    answer = json.loads(minted.stdout)
    leaked, jti = answer["access_token"], answer["scope_details"]["jti"]
    assert read(broker, leaked).status_code == 200
    proc = cli(broker, "token", "revoke", jti, token=issuer)
    assert (proc.returncode, proc.stdout) == (0, f"revoked: {jti}\n"), proc.stderr
    assert read(broker, leaked).json()["error"]["code"] == "token_revoked"


def test_revoke_self_revokes_the_token_given(broker, tmp_path):
    token = broker.token(environment="dev", permissions=READER)
    token_file = tmp_path / "leaked.jwt"
    token_file.write_text(token)
    proc = cli(broker, "token", "revoke", "--self", "--token-file", str(token_file), token=None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("revoked: ") and token not in proc.stdout
    assert read(broker, token).status_code == 403


@pytest.mark.parametrize("args", [[], ["some-jti", "--self"]])
def test_revoke_needs_a_jti_or_self_not_both(broker, args):
    proc = cli(broker, "token", "revoke", *args, token="x")
    assert proc.returncode == 2 and "give a JTI, or --self (not both)" in proc.stderr


def test_revoke_with_a_reader_says_it_is_a_reader(broker):
    reader = broker.token(environment="dev", permissions=READER)
    proc = cli(broker, "token", "revoke", "some-jti", token=reader)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: 403 permission_denied: the token lacks tokens:issue")
    assert "VANTA_TOKEN is a reader (secrets:read, secrets:list), not an issuer" in proc.stderr


# -- generate: what it says ----------------------------------------------------------------------


def test_generate_with_a_reader_says_to_read_with_it_or_pass_it_with_token_file(broker):
    reader = broker.token(environment="dev", permissions=READER)
    proc = cli(broker, "token", "generate", "--subject", "s", "--environment", "dev",
               "--key-pattern", "*", token=reader)  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == ""
    line = proc.stderr
    assert line.startswith("error: 403 permission_denied: the token lacks tokens:issue")
    assert "VANTA_TOKEN is a reader (secrets:read, secrets:list), not an issuer" in line
    assert "pass a reader with --token-file FILE" in line and len(line.splitlines()) == 1


def test_generate_with_an_expired_issuer_says_it_expired_and_when(broker):
    issuer = expired_token(seconds_ago=90, permissions=ISSUER)
    proc = cli(broker, "token", "generate", "--subject", "s", "--environment", "dev",
               "--key-pattern", "*", token=issuer)  # fmt: skip
    assert proc.returncode == 1 and issuer not in proc.stderr
    assert proc.stderr.startswith("error: 401 token_invalid: ")
    assert "VANTA_TOKEN expired at " in proc.stderr and "(1m 3" in proc.stderr


def test_generate_inside_the_read_leeway_says_minting_stops_at_exp(broker):
    issuer = expired_token(seconds_ago=5, permissions=ISSUER)
    proc = cli(broker, "token", "generate", "--subject", "s", "--environment", "dev",
               "--key-pattern", "*", token=issuer)  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("error: 401 token_invalid: ")
    assert "reads are still allowed for 30 s after expiry, minting is not" in proc.stderr


def test_a_refused_issuer_inside_the_read_leeway_is_told_minting_stops_at_exp():
    """The broker refuses minting from `exp` on (SPEC: whatever leeway reads allow), while
    reads go on for 30 s: the message says which."""
    issuer = expired_token(seconds_ago=5, permissions=ISSUER)
    refused = TokenInvalid(401, "token_invalid", "missing or invalid bearer token", "r1")
    text = explain(refused, TokenSource("VANTA_TOKEN", issuer), minting=True)
    assert text.startswith("401 token_invalid: missing or invalid bearer token (request_id r1): ")
    assert "VANTA_TOKEN expired at " in text
    assert text.endswith(
        "ago); reads are still allowed for 30 s after expiry, minting is not: get a new token"
    )
    assert issuer not in text


def test_generate_for_an_environment_that_does_not_exist_mints_and_says_so(broker):
    issuer = broker.token(permissions=ADMIN)
    proc = cli(broker, "token", "generate", "--subject", "s", "--environment", "dve",
               "--key-pattern", "*", "--json", token=issuer, cwd=broker.repo.path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["scope_details"]["environment"] == "dve"
    assert proc.stderr == (
        "vanta: note: the broker serves no environment 'dve' (yet): the environments in "
        f"{broker.repo.path} are dev, prod (did you mean dev?); the token is minted for it "
        "all the same\n"
    )


def test_generate_for_an_environment_that_exists_says_nothing(broker):
    issuer = broker.token(permissions=ADMIN)
    proc = cli(broker, "token", "generate", "--subject", "s", "--environment", "prod",
               "--key-pattern", "*", "--json", token=issuer)  # fmt: skip
    assert proc.returncode == 0 and proc.stderr == ""
