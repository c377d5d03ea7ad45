"""Reading secrets through the API: values, scope, versions served, usage, audit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import jwt
import pytest
from support.brokers import read_audit
from support.repos import DEV_SECRETS
from support.tokens import bearer, make_token

from broker.scope import PERMISSIONS
from broker.web.app import create_app


def test_read_returns_value_with_type_version_and_commit_time(client, config, secrets_repo):
    token = make_token(config, environment="dev", key_pattern="*")
    r = client.get("/api/v1/vault/dev/PORT", headers=bearer(token))
    assert r.status_code == 200
    body = r.get_json()
    assert body["value"] == 8080 and body["key"] == "PORT" and body["environment"] == "dev"
    assert body["version"] == secrets_repo.commits[-1]
    assert body["committed_at"].endswith("Z")
    assert r.headers["Cache-Control"] == "no-store"
    assert client.get("/api/v1/vault/dev/DEBUG", headers=bearer(token)).get_json()["value"] is True


def test_nested_key_is_read_by_its_slash_path(client, config):
    token = make_token(config, environment="dev", key_pattern="API_KEYS/*")
    r = client.get("/api/v1/vault/dev/API_KEYS/openai", headers=bearer(token))
    assert r.status_code == 200 and r.get_json()["value"] == "sk-test-openai"


def test_new_commit_is_served_on_next_request_and_uncommitted_edits_never(
    client, config, secrets_repo
):
    token = make_token(config)
    first = client.get("/api/v1/vault/prod/API_KEY", headers=bearer(token)).get_json()
    secrets_repo.write("prod", {"DATABASE_URL": "x", "API_KEY": "uncommitted-value"})
    still = client.get("/api/v1/vault/prod/API_KEY", headers=bearer(token)).get_json()
    assert still["value"] == "prod-api-key" and still["version"] == first["version"]
    sha = secrets_repo.commit("secrets: rotate prod/API_KEY")
    after = client.get("/api/v1/vault/prod/API_KEY", headers=bearer(token)).get_json()
    assert after["value"] == "uncommitted-value" and after["version"] == sha


def test_key_outside_pattern_is_403_before_existence(client, config):
    token = make_token(config, environment="dev", key_pattern="DATABASE_*")
    r = client.get("/api/v1/vault/dev/NOPE", headers=bearer(token))
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "scope_denied"
    r = client.get("/api/v1/vault/dev/DATABASE_NOPE", headers=bearer(token))
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"


def test_other_environment_is_scope_denied(client, config):
    token = make_token(config, environment="dev")
    r = client.get("/api/v1/vault/prod/API_KEY", headers=bearer(token))
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "scope_denied"


def test_unknown_environment_is_404(client, config):
    r = client.get("/api/v1/vault/qa/X", headers=bearer(make_token(config)))
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"


def test_missing_permission_is_permission_denied(client, config):
    token = make_token(config, permissions=("secrets:list",))
    r = client.get("/api/v1/vault/dev/PORT", headers=bearer(token))
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "permission_denied"


def test_list_gives_names_inside_token_pattern_only(client, config):
    token = make_token(config, environment="dev", key_pattern="DATABASE_*")
    r = client.get("/api/v1/vault/dev?pattern=*", headers=bearer(token))
    assert r.status_code == 200
    assert sorted(r.get_json()["keys"]) == ["DATABASE_URL", "DATABASE_USER"]
    assert "s3cret" not in r.get_data(as_text=True)


def test_batch_by_keys_and_by_pattern(client, config):
    token = make_token(config, environment="dev")
    r = client.post(
        "/api/v1/vault/dev/batch", json={"keys": ["PORT", "API_KEYS/openai"]}, headers=bearer(token)
    )
    assert r.status_code == 200
    assert r.get_json()["values"] == {"PORT": 8080, "API_KEYS/openai": "sk-test-openai"}
    r = client.post(
        "/api/v1/vault/dev/batch", json={"pattern": "API_KEYS/*"}, headers=bearer(token)
    )
    assert r.get_json()["values"] == {
        f"API_KEYS/{name}": value for name, value in DEV_SECRETS["API_KEYS"].items()
    }
    r = client.post("/api/v1/vault/dev/batch", json={"pattern": "NONE*"}, headers=bearer(token))
    assert r.status_code == 200 and r.get_json()["values"] == {}


def test_batch_naming_a_missing_key_is_404_and_returns_nothing(client, config):
    token = make_token(config, environment="dev")
    r = client.post(
        "/api/v1/vault/dev/batch", json={"keys": ["PORT", "MISSING"]}, headers=bearer(token)
    )
    assert r.status_code == 404 and "8080" not in r.get_data(as_text=True)


def test_pattern_batch_needs_list_permission(client, config):
    token = make_token(config, permissions=("secrets:read",))
    r = client.post("/api/v1/vault/dev/batch", json={"pattern": "*"}, headers=bearer(token))
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "permission_denied"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {
            "keys": [],
        },
        {"keys": ["A"], "pattern": "*"},
        {"keys": "A"},
        {"keys": [1]},
        {"pattern": "[a]"},
        {"keys": ["a" * 300]},
        {"keys": ["x"] * 1001},
    ],
)
def test_malformed_batch_is_400(client, config, body):
    r = client.post("/api/v1/vault/dev/batch", json=body, headers=bearer(make_token(config)))
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "bad_request"


def test_usage_limit_counts_successful_reads_only(client, config):
    token = make_token(config, environment="dev", usage_limit=2)
    assert client.get("/api/v1/vault/dev/MISSING", headers=bearer(token)).status_code == 404
    assert client.get("/api/v1/vault/dev/PORT", headers=bearer(token)).status_code == 200
    assert client.get("/api/v1/vault/dev?pattern=*", headers=bearer(token)).status_code == 200
    assert (
        client.post(
            "/api/v1/vault/dev/batch", json={"keys": ["PORT"]}, headers=bearer(token)
        ).status_code
        == 200
    )
    r = client.get("/api/v1/vault/dev/PORT", headers=bearer(token))
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "usage_exhausted"


def test_every_api_request_is_audited_without_values(client, config):
    token = make_token(config, environment="dev", subject="billing")
    client.get("/api/v1/vault/dev/DATABASE_URL", headers=bearer(token))
    client.get("/api/v1/vault/dev/DATABASE_URL")
    client.get("/api/v1/nowhere")
    records = read_audit(config)
    assert [r["status"] for r in records] == [200, 401, 404]
    first = records[0]
    assert first["event"] == "secret.read" and first["subject"] == "billing"
    assert first["key"] == "DATABASE_URL" and first["outcome"] == "success"
    assert records[1]["outcome"] == "denied" and records[1]["error"] == "token_invalid"
    assert records[2]["event"] == "request" and records[2]["outcome"] == "error"
    text = config.audit_log.read_text()
    assert "s3cret" not in text and token not in text


def test_audit_failure_means_no_secret_and_no_use(config):
    # /dev/full refuses every write (ENOSPC), as a full disk would.
    app = create_app(replace(config, audit_log=Path("/dev/full")))
    token = make_token(config, environment="dev", usage_limit=1)
    r = app.test_client().get("/api/v1/vault/dev/PORT", headers=bearer(token))
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "audit_unavailable"
    assert "8080" not in r.get_data(as_text=True)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    assert app.extensions["vanta"].state.used(jti) == 0


def test_all_permissions_constant_is_spec_list():
    assert PERMISSIONS == ("secrets:read", "secrets:list", "tokens:issue", "audit:read")


@pytest.mark.parametrize(
    "query", ["?versoin=abc1234", "?pattern=*", "?version=abc1234&version=def5678", "?=x"]
)
def test_unknown_or_repeated_query_parameters_are_400(client, config, query):
    token = make_token(config, environment="dev", usage_limit=1)
    r = client.get(f"/api/v1/vault/dev/PORT{query}", headers=bearer(token))
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "bad_request"
    assert client.get("/api/v1/vault/dev/PORT", headers=bearer(token)).status_code == 200


def test_a_denied_read_is_audited_with_the_key_it_wanted(client, config):
    client.get("/api/v1/vault/dev/DATABASE_URL", headers=bearer("not-a-token"))
    record = read_audit(config)[-1]
    assert (record["status"], record["environment"], record["key"]) == (401, "dev", "DATABASE_URL")
