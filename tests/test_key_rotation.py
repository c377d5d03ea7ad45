"""Signing-key rotation (SPEC §5, §10): VANTA_JWT_SECRET_KEYS, `kid` headers, keys of at
least 32 bytes, and only HS256 with the key the `kid` names."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import jwt
import pytest
import requests
from support.brokers import start_broker, stop_broker
from support.repos import SIGNING_KEY
from support.tokens import bearer, make_token

from broker.config import Config, ConfigError, Keyring, SecretValue
from broker.scope import PERMISSIONS
from broker.web.app import create_app

K1 = "first-key-0123456789abcdefghijklmnopqrstu"
K2 = "second-key-0123456789abcdefghijklmnopqrstu"
K3 = "third-key-0123456789abcdefghijklmnopqrstuv"
READ_PORT = "/api/v1/vault/dev/PORT"


def keyring(*pairs: tuple[str | None, str]) -> Keyring:
    return Keyring(tuple((kid, SecretValue(key)) for kid, key in pairs))


def client_with(config: Config, ring: Keyring):
    return create_app(replace(config, keyring=ring)).test_client()


def token_for(config: Config, ring: Keyring, **kw) -> str:
    return make_token(replace(config, keyring=ring), environment="dev", **kw)


def claims_of(**claims) -> dict:
    return {
        "iss": "vanta-vault",
        "aud": "vanta-vault-api",
        "sub": "forger",
        "iat": int(time.time()),
        "nbf": int(time.time()),
        "exp": int(time.time()) + 600,
        "jti": "forged-jti-0123456789abcdef",
        "scope": {"environment": "dev", "key_pattern": "*", "permissions": ["secrets:read"]},
        **claims,
    }


def forged(key: str, headers: dict | None = None, algorithm: str = "HS256", **claims) -> str:
    """A well-formed token signed with `key`, carrying `headers`."""
    return jwt.encode(claims_of(**claims), key, algorithm=algorithm, headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(header: dict, key: str | None, **claims) -> str:
    """A token built by hand: any header at all, HMAC-SHA256 over it with `key` (or no
    signature), as an attacker would send it."""
    signing_input = (
        f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims_of(**claims)).encode())}"
    )
    if key is None:
        return signing_input + "."
    mac = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def kid_of(token: str) -> str | None:
    return jwt.get_unverified_header(token).get("kid")


def status(client, token: str) -> int:
    return client.get(READ_PORT, headers=bearer(token)).status_code


# -- configuration -------------------------------------------------------------------------


def test_keys_are_listed_by_id_and_the_first_signs():
    ring = Keyring.from_env({"VANTA_JWT_SECRET_KEYS": f"k2:{K2}, k1:{K1}"})
    assert [kid for kid, _ in ring.keys] == ["k2", "k1"]
    assert ring.signing[0] == "k2" and ring.signing[1].reveal() == K2
    assert ring.lookup("k1").reveal() == K1  # type: ignore[union-attr]


def test_a_key_may_hold_colons():
    ring = Keyring.from_env({"VANTA_JWT_SECRET_KEYS": f"k1:{K1}:more"})
    assert ring.lookup("k1").reveal() == f"{K1}:more"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "environ, names",
    [
        ({}, "VANTA_JWT_SECRET_KEY"),
        ({"VANTA_JWT_SECRET_KEY": K1, "VANTA_JWT_SECRET_KEYS": f"k1:{K1}"}, "exactly one"),
        ({"VANTA_JWT_SECRET_KEY": "short-key-31-bytes-long-0123456"}, "VANTA_JWT_SECRET_KEY"),
        ({"VANTA_JWT_SECRET_KEYS": "k1:short-key-31-bytes-long-0123456"}, "k1"),
        ({"VANTA_JWT_SECRET_KEYS": f"k2:{K2},k1:tiny"}, "k1"),
        ({"VANTA_JWT_SECRET_KEYS": K1}, "k2:<key>"),  # no id
        ({"VANTA_JWT_SECRET_KEYS": f":{K1}"}, "k2:<key>"),  # empty id
        ({"VANTA_JWT_SECRET_KEYS": f"k1:{K1},"}, "k2:<key>"),  # trailing comma
        ({"VANTA_JWT_SECRET_KEYS": f"k1:{K1},k1:{K2}"}, "twice"),
        ({"VANTA_JWT_SECRET_KEY": "é" * 15 + "x"}, "32 bytes"),  # 31 bytes, 16 characters
    ],
)
def test_bad_key_configuration_is_refused_without_showing_a_key(environ, names):
    with pytest.raises(ConfigError) as raised:
        Keyring.from_env(environ)
    message = str(raised.value)
    assert names in message
    for value in environ.values():
        for item in value.split(","):
            secret = item.partition(":")[2] or item
            assert len(secret) < 8 or secret not in message


def test_key_length_counts_bytes_not_characters():
    ring = Keyring.from_env({"VANTA_JWT_SECRET_KEY": "é" * 16})  # 32 bytes
    assert ring.signing[1].reveal() == "é" * 16


def test_keys_never_show_in_a_repr():
    ring = Keyring.from_env({"VANTA_JWT_SECRET_KEYS": f"k2:{K2},k1:{K1}"})
    assert K1 not in repr(ring) and K2 not in repr(ring) and K1 not in str(ring)


def test_the_broker_refuses_to_start_with_a_short_key(config, tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "VANTA_JWT_SECRET_KEYS": f"k2:{K2},k1:only-20-bytes-000000",
        "VANTA_SOPS_FILES_PATH": str(config.sops_files_path),
        "VANTA_AUDIT_LOG": str(tmp_path / "a.jsonl"),
        "VANTA_STATE_DB": str(tmp_path / "s.db"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "broker", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "VANTA_JWT_SECRET_KEYS" in proc.stderr and "k1" in proc.stderr
    assert "only-20-bytes" not in proc.stderr + proc.stdout and K2 not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# -- minting carries the kid --------------------------------------------------------------


def test_the_broker_mints_with_the_first_key_and_names_it(config):
    ring = keyring(("k2", K2), ("k1", K1))
    client = client_with(config, ring)
    issuer = token_for(config, keyring(("k1", K1)), permissions=PERMISSIONS)
    assert kid_of(issuer) == "k1"
    r = client.post(
        "/api/v1/vault/tokens/generate",
        json={"subject": "svc", "environment": "dev", "key_pattern": "PORT"},
        headers=bearer(issuer),
    )
    child = r.get_json()["access_token"]
    assert kid_of(child) == "k2"
    jwt.decode(child, K2, algorithms=["HS256"], audience="vanta-vault-api")
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(child, K1, algorithms=["HS256"], audience="vanta-vault-api")
    assert status(client, child) == 200


def test_a_single_secret_key_mints_without_a_kid(config):
    assert kid_of(make_token(config)) is None


# -- rotation --------------------------------------------------------------------------------


def test_rotation_keeps_old_tokens_until_their_key_is_removed(config):
    before = keyring(("k1", K1))
    during = keyring(("k2", K2), ("k1", K1))
    after = keyring(("k2", K2))
    old = token_for(config, before)
    new = token_for(config, during)
    assert (kid_of(old), kid_of(new)) == ("k1", "k2")

    assert status(client_with(config, before), old) == 200
    assert status(client_with(config, during), old) == 200
    assert status(client_with(config, during), new) == 200
    # Removing k1 invalidates exactly the tokens it signed.
    assert status(client_with(config, after), old) == 401
    assert status(client_with(config, after), new) == 200


def test_a_third_key_added_at_the_back_verifies_but_does_not_sign(config):
    ring = keyring(("k2", K2), ("k1", K1), ("k3", K3))
    client = client_with(config, ring)
    assert status(client, token_for(config, keyring(("k3", K3)))) == 200
    assert kid_of(token_for(config, ring)) == "k2"


@pytest.mark.parametrize(
    "headers",
    [
        {"kid": "k9"},
        {"kid": ""},
        {"kid": "K1"},  # ids are case-sensitive
        {"kid": "../../k1"},
        {"kid": 1},
        {"kid": ["k1"]},
        {"kid": {"id": "k1"}},
        {"kid": None},
    ],
)
def test_an_unknown_or_malformed_kid_is_401(config, headers):
    client = client_with(config, keyring(("k2", K2), ("k1", K1)))
    r = client.get(READ_PORT, headers=bearer(hand_signed({"alg": "HS256", **headers}, K1)))
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "token_invalid"


def test_the_kid_chooses_the_key_and_no_other_key_is_tried(config):
    client = client_with(config, keyring(("k2", K2), ("k1", K1)))
    assert status(client, forged(K1, {"kid": "k1"})) == 200
    assert status(client, forged(K2, {"kid": "k2"})) == 200
    assert status(client, forged(K2, {"kid": "k1"})) == 401
    assert status(client, forged(K1, {"kid": "k2"})) == 401


def test_a_token_without_kid_is_accepted_only_while_one_key_is_configured(config):
    lone = client_with(config, keyring(("k1", K1)))
    assert status(lone, forged(K1)) == 200
    assert status(lone, forged(K2)) == 401
    two = client_with(config, keyring(("k1", K1), ("k2", K2)))
    assert status(two, forged(K1)) == 401  # even signed by the key that signs
    assert status(two, forged(K2)) == 401


def test_with_a_single_secret_key_a_kid_header_is_ignored(config):
    client = client_with(config, keyring((None, SIGNING_KEY)))
    assert status(client, forged(SIGNING_KEY, {"kid": "anything"})) == 200
    assert status(client, hand_signed({"alg": "HS256", "kid": 7}, SIGNING_KEY)) == 401
    assert status(client, forged(K1, {"kid": "anything"})) == 401


def test_a_hand_built_token_is_accepted_when_its_header_is_right(config):
    # The control for the refusals around it: the hand-built token itself is sound.
    client = client_with(config, keyring(("k2", K2), ("k1", K1)))
    assert status(client, hand_signed({"alg": "HS256", "typ": "JWT", "kid": "k1"}, K1)) == 200


@pytest.mark.parametrize(
    "make",
    [
        lambda: hand_signed({"alg": "none", "kid": "k1"}, None),
        lambda: hand_signed({"alg": "none", "kid": "k1"}, K1),
        lambda: hand_signed({"kid": "k1"}, K1),  # no alg at all
        lambda: hand_signed({"alg": "RS256", "kid": "k1"}, K1),
        lambda: hand_signed({"alg": "hs256", "kid": "k1"}, K1),
        lambda: forged(K1, {"kid": "k1"}, algorithm="HS384"),
        lambda: forged(K1, {"kid": "k1"}, algorithm="HS512"),
    ],
    ids=["none-unsigned", "none-signed", "no-alg", "RS256-header", "lowercase", "HS384", "HS512"],
)
def test_only_hs256_is_accepted(config, make):
    client = client_with(config, keyring(("k1", K1)))
    assert status(client, make()) == 401


def test_removed_key_tokens_fail_but_revocation_and_state_are_untouched(config):
    # A token signed by a removed key is 401 before any state is touched: a revoked
    # token of the surviving key stays revoked.
    ring = keyring(("k2", K2), ("k1", K1))
    client = client_with(config, ring)
    root = token_for(config, ring, permissions=PERMISSIONS)
    r = client.post("/api/v1/vault/tokens/revoke-self", headers=bearer(root))
    assert r.status_code == 200
    narrowed = client_with(config, keyring(("k2", K2)))
    assert narrowed.get(READ_PORT, headers=bearer(root)).get_json()["error"]["code"] == (
        "token_revoked"
    )


# -- a real broker rotated without downtime ----------------------------------------------------


def test_rotating_a_real_broker_keeps_serving_old_tokens_until_the_key_goes(config, tmp_path):
    def run(keys: str):
        return start_broker(
            config,
            tmp_path,
            extra_env={"VANTA_JWT_SECRET_KEY": "", "VANTA_JWT_SECRET_KEYS": keys},
        )

    def mint_through(broker) -> str:
        root = token_for(config, keyring(("k1", K1)), permissions=PERMISSIONS)
        r = requests.post(
            f"{broker.url}/api/v1/vault/tokens/generate",
            json={"subject": "svc", "environment": "dev", "key_pattern": "PORT"},
            headers=bearer(root),
            timeout=30,
        )
        assert r.status_code == 201, r.text
        return r.json()["access_token"]

    def read(broker, token: str) -> int:
        return requests.get(broker.url + READ_PORT, headers=bearer(token), timeout=30).status_code

    old_broker = run(f"k1:{K1}")
    try:
        old = mint_through(old_broker)
    finally:
        stop_broker(old_broker)
    assert kid_of(old) == "k1"

    rolling = run(f"k2:{K2},k1:{K1}")
    try:
        assert read(rolling, old) == 200
        new = mint_through(rolling)
        assert kid_of(new) == "k2" and read(rolling, new) == 200
    finally:
        stop_broker(rolling)

    rotated = run(f"k2:{K2}")
    try:
        assert read(rotated, old) == 401
        assert read(rotated, new) == 200
        log = rotated.log()
    finally:
        stop_broker(rotated)
    assert K1 not in log and K2 not in log and old not in log and new not in log


# -- offline minting (vanta-cli token generate --offline) -------------------------------------


def offline_cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    args = ["token", "generate", "--offline", "--subject", "boot", "--environment", "dev"]
    return subprocess.run(
        [str(Path(sys.executable).parent / "vanta-cli"), *args, "--key-pattern", "*", "--json"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_offline_minting_signs_with_the_first_key_and_names_it(config):
    proc = offline_cli({"VANTA_JWT_SECRET_KEYS": f"k2:{K2},k1:{K1}"})
    assert proc.returncode == 0, proc.stderr
    token = json.loads(proc.stdout)["access_token"]
    assert kid_of(token) == "k2"
    assert status(client_with(config, keyring(("k2", K2), ("k1", K1))), token) == 200
    assert status(client_with(config, keyring(("k1", K1))), token) == 401


@pytest.mark.parametrize(
    "env",
    [
        {"VANTA_JWT_SECRET_KEYS": f"k2:short-key,k1:{K1}"},
        {"VANTA_JWT_SECRET_KEY": K1, "VANTA_JWT_SECRET_KEYS": f"k2:{K2}"},
        {},
    ],
)
def test_offline_minting_refuses_a_bad_key_configuration_in_one_line(env):
    proc = offline_cli(env)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "short-key" not in proc.stderr and K1 not in proc.stderr and K2 not in proc.stderr
