"""Minting tokens through the broker, token validation, routing and error shapes."""

from __future__ import annotations

import time

import jwt
import pytest
import requests
from support.brokers import read_audit
from support.repos import SIGNING_KEY
from support.tokens import bearer, make_token

from broker.config import Config, ConfigError
from broker.scope import PERMISSIONS
from broker.tokens.claims import new_jti

ISSUER_PERMS = ("secrets:read", "secrets:list", "tokens:issue")


def generate(client, token, **body):
    return client.post("/api/v1/vault/tokens/generate", json=body, headers=bearer(token))


def test_generate_answers_201_with_scope_details_and_working_token(client, config):
    issuer = make_token(
        config, environment="prod", key_pattern="DATABASE_*", permissions=ISSUER_PERMS
    )
    r = generate(
        client,
        issuer,
        subject="billing-api",
        environment="prod",
        key_pattern="DATABASE_URL",
        ttl_minutes=5,
        usage_limit=1,
    )
    assert r.status_code == 201
    body = r.get_json()
    assert body["token_type"] == "Bearer" and 295 <= body["expires_in"] <= 300
    details = body["scope_details"]
    assert details["permissions"] == ["secrets:read"] and details["usage_limit"] == 1
    assert details["expires_at"].endswith("Z") and len(details["jti"]) >= 22
    claims = jwt.decode(
        body["access_token"], SIGNING_KEY, algorithms=["HS256"], audience="vanta-vault-api"
    )
    assert claims["scope"]["key_pattern"] == "DATABASE_URL" and claims["sub"] == "billing-api"
    child = body["access_token"]
    assert client.get("/api/v1/vault/prod/DATABASE_URL", headers=bearer(child)).status_code == 200
    assert client.get("/api/v1/vault/prod/DATABASE_URL", headers=bearer(child)).status_code == 403


@pytest.mark.parametrize(
    "wanted",
    [
        {"environment": "dev", "key_pattern": "DATABASE_URL"},
        {"environment": "*", "key_pattern": "DATABASE_URL"},
        {"environment": "prod", "key_pattern": "*"},
        {"environment": "prod", "key_pattern": "DATABASE*X"},
        {"environment": "prod", "key_pattern": "DATABASE_URL", "permissions": ["audit:read"]},
    ],
)
def test_child_must_lie_inside_issuer(client, config, wanted):
    issuer = make_token(
        config, environment="prod", key_pattern="DATABASE_?*", permissions=ISSUER_PERMS
    )
    r = generate(client, issuer, subject="s", **wanted)
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "scope_denied"


def test_issuer_without_tokens_issue_is_permission_denied(client, config):
    issuer = make_token(config, permissions=("secrets:read",))
    r = generate(client, issuer, subject="s", environment="dev", key_pattern="*")
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "permission_denied"


def test_child_lifetime_is_cut_to_issuer_expiry(client, config):
    issuer = make_token(config, permissions=ISSUER_PERMS, ttl_minutes=2)
    r = generate(client, issuer, subject="s", environment="dev", key_pattern="*", ttl_minutes=60)
    assert r.status_code == 201 and r.get_json()["expires_in"] <= 120


@pytest.mark.parametrize(
    "body, field",
    [
        ({"environment": "dev", "key_pattern": "*"}, "subject"),
        ({"subject": "", "environment": "dev", "key_pattern": "*"}, "subject"),
        ({"subject": "a\x00b", "environment": "dev", "key_pattern": "*"}, "subject"),
        ({"subject": "s", "environment": "../etc", "key_pattern": "*"}, "environment"),
        ({"subject": "s", "environment": "Dev", "key_pattern": "*"}, "environment"),
        ({"subject": "s", "environment": "tokens", "key_pattern": "*"}, "environment"),
        ({"subject": "s", "environment": "dev", "key_pattern": "[a-z]"}, "key_pattern"),
        (
            {"subject": "s", "environment": "dev", "key_pattern": "*", "ttl_minutes": 0},
            "ttl_minutes",
        ),
        (
            {"subject": "s", "environment": "dev", "key_pattern": "*", "ttl_minutes": 1441},
            "ttl_minutes",
        ),
        (
            {"subject": "s", "environment": "dev", "key_pattern": "*", "ttl_minutes": 1.5},
            "ttl_minutes",
        ),
        (
            {"subject": "s", "environment": "dev", "key_pattern": "*", "ttl_minutes": True},
            "ttl_minutes",
        ),
        (
            {"subject": "s", "environment": "dev", "key_pattern": "*", "usage_limit": 0},
            "usage_limit",
        ),
        (
            {"subject": "s", "environment": "dev", "key_pattern": "*", "usage_limit": False},
            "usage_limit",
        ),
        (
            {"subject": "s", "environment": "dev", "key_pattern": "*", "usage_limit": 2.5},
            "usage_limit",
        ),
        (
            {"subject": "s", "environment": "dev", "key_pattern": "*", "permissions": ["root"]},
            "permissions",
        ),
    ],
)
def test_malformed_generate_is_400_naming_the_field(client, config, body, field):
    issuer = make_token(config, permissions=ISSUER_PERMS)
    r = client.post("/api/v1/vault/tokens/generate", json=body, headers=bearer(issuer))
    assert r.status_code == 400
    assert (
        r.get_json()["error"]["code"] == "bad_request" and field in r.get_json()["error"]["message"]
    )


@pytest.mark.parametrize("raw", [b"{", b"[]", b"null", b"\xff\xfe", b'{"subject": 1e999}'])
def test_non_object_or_broken_json_is_400(client, config, raw):
    issuer = make_token(config, permissions=ISSUER_PERMS)
    r = client.post("/api/v1/vault/tokens/generate", data=raw, headers=bearer(issuer))
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "bad_request"


def _forge(config: Config, **changes) -> str:
    now = int(time.time())
    payload = {
        "iss": "vanta-vault",
        "aud": "vanta-vault-api",
        "sub": "x",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "forged-jti-0001",
        "scope": {"environment": "*", "key_pattern": "*", "permissions": ["secrets:read"]},
    }
    key = changes.pop("_key", SIGNING_KEY)
    alg = changes.pop("_alg", "HS256")
    for name, value in changes.items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return jwt.encode(payload, key, algorithm=alg)


BAD_TOKENS = {
    "wrong key": lambda c: _forge(c, _key="another-key-that-is-long-enough-000000"),
    "expired": lambda c: _forge(c, exp=int(time.time()) - 120),
    "not yet valid": lambda c: _forge(c, nbf=int(time.time()) + 120),
    "wrong issuer": lambda c: _forge(c, iss="someone-else"),
    "wrong audience": lambda c: _forge(c, aud="other-api"),
    "no jti": lambda c: _forge(c, jti=None),
    "no scope": lambda c: _forge(c, scope=None),
    "no exp": lambda c: _forge(c, exp=None),
    "bad scope": lambda c: _forge(
        c, scope={"environment": "../x", "key_pattern": "*", "permissions": ["secrets:read"]}
    ),
    "alg none": lambda c: jwt.encode(
        jwt.decode(_forge(c), options={"verify_signature": False}), key=None, algorithm="none"
    ),
    "HS512": lambda c: _forge(c, _alg="HS512"),
    "garbage": lambda c: "not.a.jwt",
    "huge": lambda c: "a" * 20000,
}


@pytest.mark.parametrize("name", sorted(BAD_TOKENS))
def test_bad_tokens_get_one_generic_401(client, config, name):
    r = client.get("/api/v1/vault/dev/PORT", headers=bearer(BAD_TOKENS[name](config)))
    assert r.status_code == 401
    body = r.get_json()
    assert body["error"] == {"code": "token_invalid", "message": "missing or invalid bearer token"}
    assert body["request_id"]


def test_clock_skew_under_30s_is_tolerated(client, config):
    token = _forge(config, exp=int(time.time()) - 10)
    assert client.get("/api/v1/vault/dev/PORT", headers=bearer(token)).status_code == 200


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/api/v1/vault/tokens/generate", 405),
        ("GET", "/api/v1/vault/tokens/anything/else", 405),
        ("GET", "/api/v1/vault/tokens", 405),
        ("DELETE", "/api/v1/vault/dev/PORT", 405),
        ("PUT", "/api/v1/vault/dev/batch", 405),
        ("GET", "/api/v1/nothing/here", 404),
        ("GET", "/nothing", 404),
    ],
)
def test_routing_comes_before_authentication(client, config, method, path, status):
    r = client.open(path, method=method, headers={"Authorization": "Bearer junk"})
    assert r.status_code == status
    assert r.get_json()["error"]["code"] == ("not_found" if status == 404 else "method_not_allowed")


@pytest.mark.parametrize("env", ["..", "Dev", "a" * 64, "dev%00", "-dev", "_x"])
def test_bad_environment_names_are_400(client, config, env):
    r = client.get(f"/api/v1/vault/{env}/PORT", headers=bearer(make_token(config)))
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "bad_request"


def test_healthz_needs_no_token_and_says_nothing_else(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}


def test_generate_is_audited_with_issuer_and_minted_jti(client, config):
    issuer = make_token(config, permissions=ISSUER_PERMS, subject="ci-issuer")
    r = generate(client, issuer, subject="svc", environment="dev", key_pattern="*")
    record = read_audit(config)[-1]
    assert record["event"] == "token.generate" and record["subject"] == "ci-issuer"
    assert record["minted_jti"] == r.get_json()["scope_details"]["jti"]
    assert r.get_json()["access_token"] not in config.audit_log.read_text()


@pytest.mark.parametrize(
    "environ, fragment",
    [
        ({}, "VANTA_JWT_SECRET_KEY"),
        ({"VANTA_JWT_SECRET_KEY": "short"}, "at least 32 bytes"),
        (
            {"VANTA_JWT_SECRET_KEY": "k" * 32, "VANTA_JWT_SECRET_KEYS": "a:" + "k" * 32},
            "exactly one",
        ),
        ({"VANTA_JWT_SECRET_KEYS": "a:" + "k" * 10}, "at least 32 bytes"),
        (
            {"VANTA_JWT_SECRET_KEY": "k" * 32, "VANTA_SOPS_FILES_PATH": "/no/such/dir"},
            "VANTA_SOPS_FILES_PATH",
        ),
        (
            {"VANTA_JWT_SECRET_KEY": "k" * 32, "VANTA_MAX_TTL_MINUTES": "ten"},
            "VANTA_MAX_TTL_MINUTES",
        ),
    ],
)
def test_config_refuses_to_start_naming_the_variable(secrets_repo, environ, fragment):
    environ = {"VANTA_SOPS_FILES_PATH": str(secrets_repo.secrets_dir), **environ}
    with pytest.raises(ConfigError, match=fragment.replace("*", r"\*")):
        Config.from_env(environ)


def test_config_repr_never_shows_the_signing_key(secrets_repo):
    config = Config.from_env(
        {
            "VANTA_JWT_SECRET_KEY": SIGNING_KEY,
            "VANTA_SOPS_FILES_PATH": str(secrets_repo.secrets_dir),
        }
    )
    assert SIGNING_KEY not in repr(config) and "<SECRET>" in repr(config)


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
def test_implicit_methods_on_api_routes_are_405_and_use_nothing(client, config, method):
    token = make_token(config, environment="dev", usage_limit=1)
    r = client.open("/api/v1/vault/dev/PORT", method=method, headers=bearer(token))
    assert r.status_code == 405
    assert client.get("/api/v1/vault/dev/PORT", headers=bearer(token)).status_code == 200


# -- issuers whose children would escape their bounds -------------------------------------


def _mint(url: str, issuer: str) -> requests.Response:
    body = {"subject": "child", "environment": "dev", "key_pattern": "*"}
    return requests.post(
        f"{url}/api/v1/vault/tokens/generate", json=body, headers=bearer(issuer), timeout=30
    )


def test_an_issuer_with_a_usage_limit_cannot_mint(running_broker, config):
    """The red team's case: a 1-use issuer, its use spent, minted unlimited children."""
    issuer = make_token(config, usage_limit=1)
    r = _mint(running_broker.url, issuer)
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
    assert "usage limit" in r.json()["error"]["message"]
    assert "access_token" not in r.text
    record = read_audit(config)[-1]
    assert record["event"] == "token.generate" and record["outcome"] == "denied"
    assert "minted_jti" not in record


def test_an_issuer_past_its_expiry_cannot_mint_inside_the_read_leeway(running_broker, config):
    now = int(time.time())
    claims = {
        "iss": config.jwt_issuer,
        "aud": config.jwt_audience,
        "sub": "ops",
        "iat": now - 120,
        "nbf": now - 120,
        "exp": now - 5,  # expired 5 s ago: still inside the 30 s leeway reads allow
        "jti": "expired-issuer-0123456789abcdef",
        "scope": {"environment": "*", "key_pattern": "*", "permissions": list(PERMISSIONS)},
    }
    issuer = jwt.encode(claims, SIGNING_KEY, algorithm="HS256")
    read = requests.get(
        f"{running_broker.url}/api/v1/vault/dev/PORT", headers=bearer(issuer), timeout=30
    )
    assert read.status_code == 200  # the leeway holds for reads
    r = _mint(running_broker.url, issuer)
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_invalid"
    assert "access_token" not in r.text


def test_an_unlimited_issuer_still_mints_limited_children(running_broker, config):
    r = requests.post(
        f"{running_broker.url}/api/v1/vault/tokens/generate",
        json={"subject": "c", "environment": "dev", "key_pattern": "*", "usage_limit": 1},
        headers=bearer(make_token(config)),
        timeout=30,
    )
    assert r.status_code == 201
    child = r.json()["access_token"]
    r = _mint(running_broker.url, child)  # and that child cannot mint in its turn
    assert r.status_code == 403


def test_a_minted_jti_never_begins_with_a_dash(client, config):
    """A jti goes on command lines (`vanta-cli token revoke JTI`): one starting with "-"
    would be read as an option. 4,000 of them (a "-" start is 1 in 64 by chance), and
    what the endpoint mints."""
    issuer = bearer(make_token(config))
    body = {"subject": "s", "environment": "dev", "key_pattern": "*"}
    minted = [
        client.post("/api/v1/vault/tokens/generate", json=body, headers=issuer) for _ in range(200)
    ]
    jtis = [r.get_json()["scope_details"]["jti"] for r in minted]
    jtis += [new_jti() for _ in range(4000)]
    assert not [jti for jti in jtis if jti.startswith("-")]
    assert len(set(jtis)) == len(jtis) and {len(jti) for jti in jtis} == {32}
