"""GET /api/v1/openapi.json: a valid OpenAPI 3.1 document, served openly and unaudited,
naming every route; and the answers schemathesis cannot provoke (503s, 409, 413, 429,
exhausted or revoked tokens, typed values, old versions) conform to it too."""

from __future__ import annotations

import hashlib
import hmac
import inspect
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from flask import Flask
from schemathesis.specs.openapi.definitions import OPENAPI_31
from support.agekeys import generate_age_key
from support.brokers import read_audit
from support.openapi import assert_conforms
from support.repos import git
from support.tokens import bearer, make_token, minute_with_room

from broker import errors
from broker.config import Config, SecretValue
from broker.scope import PERMISSIONS
from broker.web.app import create_app
from broker.web.endpoints import ROUTES
from broker.web.openapi import build_document, error_codes

SPEC_ERROR_CODES = {
    "bad_request",
    "token_invalid",
    "scope_denied",
    "permission_denied",
    "usage_exhausted",
    "token_revoked",
    "not_found",
    "method_not_allowed",
    "payload_too_large",
    "decrypt_failed",
    "audit_unavailable",
    "state_unavailable",
    "signature_invalid",
    "non_fast_forward",
    "unsigned_commit",
    "sync_failed",
    "rate_limited",
}
HOOK_SECRET = "openapi-test-webhook-secret"
READ = "/api/v1/vault/{environment}/{key}"
BATCH = "/api/v1/vault/{environment}/batch"


def client_for(config: Config, **kwargs: Any):
    return create_app(config, background=False, **kwargs).test_client()


def signed(body: bytes) -> dict[str, str]:
    digest = hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json"}


# -- the document itself ------------------------------------------------------------------


def test_document_is_valid_openapi_3_1(config):
    document = client_for(config).get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.1.")
    errors_found = [str(e) for e in jsonschema_rs.validator_for(OPENAPI_31).iter_errors(document)]
    assert errors_found == []


def test_document_is_served_without_a_token_and_never_audited(config):
    r = client_for(config).get("/api/v1/openapi.json")
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert r.get_json() == build_document(config.max_ttl_minutes)
    assert read_audit(config) == []


def test_document_is_cached_briefly_and_revalidated_by_etag(config):
    client = client_for(config)
    r = client.get("/api/v1/openapi.json")
    assert r.headers["Cache-Control"] == "public, max-age=300" and r.headers["ETag"]
    again = client.get("/api/v1/openapi.json", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""


def test_document_states_the_configured_longest_ttl(config):
    document = client_for(replace(config, max_ttl_minutes=60)).get("/api/v1/openapi.json")
    mint = document.get_json()["components"]["schemas"]["MintRequest"]
    assert mint["properties"]["ttl_minutes"]["maximum"] == 60


def test_document_declares_bearer_jwt_and_the_openapi_route_is_public(config):
    document = build_document(config.max_ttl_minutes)
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    assert document["security"] == [{"bearer": []}]
    assert document["paths"]["/api/v1/openapi.json"]["get"]["security"] == []
    assert document["paths"]["/api/v1/sync"]["post"]["security"] == []


def test_error_codes_are_the_specs_and_cover_every_domain_error(config):
    assert set(error_codes()) == SPEC_ERROR_CODES
    raised = {
        cls.code
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.ApiError)
    }
    # internal_error: ApiError's own default, never meant to reach a client.
    assert raised - {"internal_error"} <= SPEC_ERROR_CODES
    schema = build_document(config.max_ttl_minutes)["components"]["schemas"]["Error"]
    assert set(schema["properties"]["error"]["properties"]["code"]["enum"]) == SPEC_ERROR_CODES


def _documented(app: Flask) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every /api/v1 route the app has, HEAD and OPTIONS aside."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        routes |= {(m, path) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    return routes


def test_every_api_route_is_documented_and_every_operation_routed(config):
    app = create_app(config, background=False)
    routes = _documented(app)
    document = build_document(config.max_ttl_minutes)["paths"]
    operations = {(m.upper(), p) for p, item in document.items() for m in item}
    assert routes - operations == set()
    assert operations - routes == set()


def _concrete(path: str) -> str:
    """A route's rule with names filled in: environment dev, key PORT."""
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: {"environment": "dev"}.get(m[1], "PORT"), path)


GUARDED = [r for r in ROUTES if r.declared.permission]


@pytest.mark.parametrize("route", GUARDED, ids=[r.declared.operation_id for r in GUARDED])
def test_each_route_refuses_a_token_without_the_permission_it_declares(config, route):
    declared = route.declared
    lacking = tuple(p for p in PERMISSIONS if p != declared.permission)
    response = client_for(config).open(
        _concrete(route.path),
        method=declared.method,
        headers=bearer(make_token(config, permissions=lacking)),
        json={} if declared.method == "POST" else None,
        query_string={"environment": "dev"} if declared.query_names == ("environment",) else None,
    )
    assert response.status_code == 403, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "permission_denied"
    assert declared.permission in response.get_json()["error"]["message"]
    operation = build_document(config.max_ttl_minutes)["paths"]
    described = operation[re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route.path)]
    assert f"`{declared.permission}`" in described[declared.method.lower()]["description"]


CHECKED = [r for r in ROUTES if r.declared.query is not None and not r.declared.public]


@pytest.mark.parametrize("route", CHECKED, ids=[r.declared.operation_id for r in CHECKED])
def test_each_route_takes_only_the_query_parameters_it_declares(config, route):
    """An undeclared parameter is 400 naming it, before any work, and audited under the
    route's declared event."""
    declared = route.declared
    response = client_for(config).open(
        _concrete(route.path),
        method=declared.method,
        headers=bearer(make_token(config)),
        query_string={"colour": "blue"},
    )
    assert response.status_code == 400
    assert "colour" in response.get_json()["error"]["message"]
    assert read_audit(config)[-1]["event"] == declared.event


# -- answers schemathesis cannot provoke ------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [("PORT", 8080), ("DEBUG", True), ("API_KEYS/openai", "sk-test-openai")],
)
def test_typed_and_nested_values_conform(config, key, value):
    r = client_for(config).get(f"/api/v1/vault/dev/{key}", headers=bearer(make_token(config)))
    assert r.status_code == 200 and r.get_json()["value"] == value
    assert_conforms(config, "GET", READ, r)


def test_a_value_at_an_abbreviated_version_conforms(config, secrets_repo):
    url = f"/api/v1/vault/prod/API_KEY?version={secrets_repo.commits[-1][:7]}"
    r = client_for(config).get(url, headers=bearer(make_token(config)))
    assert r.status_code == 200 and r.get_json()["version"] == secrets_repo.commits[-1]
    assert_conforms(config, "GET", READ, r)


def test_outside_git_version_and_commit_time_are_null_and_conform(config, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "prod.enc.yaml").write_bytes((config.sops_files_path / "prod.enc.yaml").read_bytes())
    outside = replace(config, sops_files_path=plain)
    r = client_for(outside).get("/api/v1/vault/prod/API_KEY", headers=bearer(make_token(config)))
    assert r.status_code == 200 and r.get_json()["version"] is None
    assert_conforms(config, "GET", READ, r)


def test_an_exhausted_and_a_revoked_token_get_conforming_403s(config):
    client = client_for(config)
    token = make_token(config, usage_limit=1)
    assert client.get("/api/v1/vault/dev/PORT", headers=bearer(token)).status_code == 200
    exhausted = client.get("/api/v1/vault/dev/PORT", headers=bearer(token))
    assert exhausted.get_json()["error"]["code"] == "usage_exhausted"
    assert_conforms(config, "GET", READ, exhausted)
    revoked_self = client.post("/api/v1/vault/tokens/revoke-self", headers=bearer(token))
    assert_conforms(config, "POST", "/api/v1/vault/tokens/revoke-self", revoked_self)
    again = client.post("/api/v1/vault/tokens/revoke-self", headers=bearer(token))
    assert again.get_json()["error"]["code"] == "token_revoked"
    assert_conforms(config, "POST", "/api/v1/vault/tokens/revoke-self", again)


def test_a_body_over_1_mib_gets_a_conforming_413(config):
    body = b'{"keys": ["' + b"A" * (1024 * 1024) + b'"]}'
    r = client_for(config).post(
        "/api/v1/vault/dev/batch",
        data=body,
        headers={**bearer(make_token(config)), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert_conforms(config, "POST", BATCH, r)


def test_a_rate_limited_token_gets_a_conforming_429_with_retry_after(config):
    client = client_for(replace(config, rate_limit="1/minute"))
    token = make_token(config)
    assert client.get("/api/v1/vault/dev?pattern=*", headers=bearer(token)).status_code == 200
    r = client.get("/api/v1/vault/dev?pattern=*", headers=bearer(token))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 0
    assert_conforms(config, "GET", "/api/v1/vault/{environment}", r)


def test_a_throttled_client_gets_a_conforming_429_for_the_document_too(config):
    client = client_for(replace(config, auth_failures_per_minute=1))
    minute_with_room()
    for _ in range(2):
        client.get("/api/v1/vault/dev/PORT", headers=bearer("not-a-token"))
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 429
    assert_conforms(config, "GET", "/api/v1/openapi.json", r)


def test_a_key_sops_cannot_decrypt_gets_a_conforming_503(config, tmp_path):
    stranger = tmp_path / "stranger.txt"
    stranger.write_text(f"{generate_age_key().identity}\n")
    client = client_for(replace(config, sops_age_key_file=stranger))
    r = client.get("/api/v1/vault/prod/API_KEY", headers=bearer(make_token(config)))
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "decrypt_failed"
    assert_conforms(config, "GET", READ, r)


def test_an_audit_failure_gets_a_conforming_503(config):
    client = client_for(replace(config, audit_log=Path("/dev/full")))
    r = client.get("/api/v1/vault/prod/API_KEY", headers=bearer(make_token(config)))
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "audit_unavailable"
    assert_conforms(config, "GET", READ, r)


def test_an_empty_environment_gets_a_documented_json_answer_not_a_redirect(config):
    r = client_for(config).get("/api/v1/vault//API_KEY", headers=bearer(make_token(config)))
    assert_conforms(config, "GET", READ, r)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/api/v1/vault/tokens/generate", {"POST"}),
        ("HEAD", "/api/v1/vault/dev/PORT", {"GET"}),
        ("POST", "/api/v1/vault/tokens/batch", set()),
        ("GET", "/api/v1/vault/tokens", set()),
        ("PUT", "/api/v1/vault/dev/PORT", {"GET"}),
    ],
)
def test_a_405_names_exactly_the_methods_that_work(config, method, path, allowed):
    r = client_for(config).open(path, method=method, headers=bearer(make_token(config)))
    assert r.status_code == 405
    named = {m.strip() for m in r.headers["Allow"].split(",") if m.strip()}
    assert named == allowed


def test_a_broken_rotation_policy_gets_a_documented_answer(config, secrets_repo):
    (secrets_repo.path / ".vanta.yaml").write_text("rotation: [\n")
    secrets_repo.commit("policy: broken")
    r = client_for(config).get(
        "/api/v1/rotation?environment=prod", headers=bearer(make_token(config))
    )
    assert_conforms(config, "GET", "/api/v1/rotation", r)


def test_webhook_answers_conform_when_not_configured_synced_and_refused(config, secrets_repo):
    body = b"{}"
    unconfigured = client_for(config).post("/api/v1/sync", data=body, headers=signed(body))
    assert unconfigured.status_code == 404
    assert_conforms(config, "POST", "/api/v1/sync", unconfigured)
    remote = replace(
        config,
        git_remote=SecretValue(str(secrets_repo.path)),
        git_cache=config.state_db.parent / "git-cache",
        webhook_secret=SecretValue(HOOK_SECRET),
        git_poll_seconds=0,
        sops_files_path=Path("secrets"),
    )
    client = client_for(remote)
    synced = client.post("/api/v1/sync", data=body, headers=signed(body))
    assert synced.status_code == 200
    assert_conforms(config, "POST", "/api/v1/sync", synced)
    unsigned = client.post("/api/v1/sync", data=body)
    assert unsigned.get_json()["error"]["code"] == "signature_invalid"
    assert_conforms(config, "POST", "/api/v1/sync", unsigned)
    git(secrets_repo.path, "checkout", "-q", "--orphan", "rewritten")
    git(secrets_repo.path, "commit", "-q", "-m", "rewritten history")
    git(secrets_repo.path, "branch", "-q", "-M", "main")
    refused = client.post("/api/v1/sync", data=body, headers=signed(body))
    assert refused.status_code == 409 and refused.get_json()["version"]
    assert_conforms(config, "POST", "/api/v1/sync", refused)
