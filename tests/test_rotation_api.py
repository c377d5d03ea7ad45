"""GET /api/v1/rotation (SPEC §15): statuses at the served commit, inside the token's scope."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from support.aged import AgedRepo, build_aged_repo
from support.brokers import read_audit
from support.repos import git
from support.tokens import bearer, make_token

from broker.config import Config
from broker.web.app import create_app


@pytest.fixture
def aged_repo(tmp_path: Path, age_key, age_key_file: Path) -> AgedRepo:
    return build_aged_repo(tmp_path / "aged", age_key.recipient, age_key_file)


@pytest.fixture
def keyless_config(config: Config, aged_repo: AgedRepo, monkeypatch, tmp_path) -> Config:
    """The broker on the aged repository with no decryption key at all."""
    monkeypatch.delenv("SOPS_AGE_KEY_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    return replace(config, sops_files_path=aged_repo.repo.secrets_dir, sops_age_key_file=None)


@pytest.fixture
def client(keyless_config: Config):
    return create_app(keyless_config).test_client()


def lister(config: Config, **scope) -> dict[str, str]:
    return bearer(make_token(config, permissions=("secrets:list",), **scope))


def test_statuses_at_the_served_commit_most_urgent_first(client, keyless_config, aged_repo):
    r = client.get("/api/v1/rotation?environment=prod", headers=lister(keyless_config))
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["environment"] == "prod"
    assert body["version"] == aged_repo.log_level  # HEAD
    assert [(k["key"], k["status"], k["age_days"], k["max_age_days"]) for k in body["keys"]] == [
        ("DATABASE_URL", "overdue", 100, 30),
        ("API_KEY", "due", 20, 30),
        ("LOG_LEVEL", "ok", 5, 90),
    ]
    first = body["keys"][0]
    assert first == {
        "environment": "prod",
        "key": "DATABASE_URL",
        "last_changed": aged_repo.first,
        "changed_at": first["changed_at"],
        "age_days": 100,
        "max_age_days": 30,
        "status": "overdue",
    }
    assert first["changed_at"].endswith("Z")


def test_only_keys_inside_the_token_pattern(client, keyless_config):
    headers = lister(keyless_config, environment="dev", key_pattern="API_KEYS/*")
    r = client.get("/api/v1/rotation?environment=dev", headers=headers)
    assert [k["key"] for k in r.get_json()["keys"]] == ["API_KEYS/openai"]
    none = lister(keyless_config, environment="dev", key_pattern="NOTHING_*")
    assert client.get("/api/v1/rotation?environment=dev", headers=none).get_json()["keys"] == []


def test_each_check_is_audited_as_rotation_check(client, keyless_config, aged_repo):
    client.get("/api/v1/rotation?environment=staging", headers=lister(keyless_config))
    record = read_audit(keyless_config)[-1]
    assert record["event"] == "rotation.check"
    assert record["environment"] == "staging"
    assert record["version"] == aged_repo.log_level
    assert (record["outcome"], record["status"], record["error"]) == ("success", 200, None)
    assert record["subject"] == "test-suite" and record["jti"]


@pytest.mark.parametrize(
    ("query", "token_scope", "permissions", "status", "code", "outcome"),
    [
        ("", {}, ("secrets:list",), 400, "bad_request", "error"),
        ("?environment=", {}, ("secrets:list",), 400, "bad_request", "error"),
        ("?environment=Prod", {}, ("secrets:list",), 400, "bad_request", "error"),
        ("?environment=tokens", {}, ("secrets:list",), 400, "bad_request", "error"),
        ("?environment=qa", {}, ("secrets:list",), 404, "not_found", "error"),
        ("?environment=prod", {"environment": "dev"}, ("secrets:list",), 403, "scope_denied",
         "denied"),
        ("?environment=prod", {}, ("secrets:read",), 403, "permission_denied", "denied"),
    ],
)  # fmt: skip
def test_refusals(client, keyless_config, query, token_scope, permissions, status, code, outcome):
    token = make_token(keyless_config, permissions=permissions, **token_scope)
    r = client.get(f"/api/v1/rotation{query}", headers=bearer(token))
    assert r.status_code == status
    assert r.get_json()["error"]["code"] == code
    record = read_audit(keyless_config)[-1]
    assert (record["event"], record["outcome"], record["error"]) == (
        "rotation.check",
        outcome,
        code,
    )


def test_without_a_token_is_401(client):
    r = client.get("/api/v1/rotation?environment=prod")
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "token_invalid"


def test_a_new_commit_is_served_and_the_policy_is_the_served_commits(
    client, keyless_config, aged_repo
):
    repo = aged_repo.repo
    headers = lister(keyless_config, environment="prod")
    # An uncommitted policy change is not served...
    (repo.path / ".vanta.yaml").write_text("rotation:\n  default_max_age_days: 2\n  warn_days: 1\n")
    before = client.get("/api/v1/rotation?environment=prod", headers=headers).get_json()
    assert {k["key"]: k["status"] for k in before["keys"]}["LOG_LEVEL"] == "ok"
    # ...until it is committed, and then from the next request on.
    head = repo.commit("tighten the default rotation policy")
    after = client.get("/api/v1/rotation?environment=prod", headers=headers).get_json()
    assert after["version"] == head
    statuses = {k["key"]: (k["status"], k["max_age_days"]) for k in after["keys"]}
    assert statuses["LOG_LEVEL"] == ("overdue", 2)


def test_a_broken_policy_at_the_served_commit_is_503_naming_the_field(
    client, keyless_config, aged_repo
):
    repo = aged_repo.repo
    (repo.path / ".vanta.yaml").write_text("rotation:\n  default_max_age_days: forever\n")
    repo.commit("a broken policy")
    r = client.get("/api/v1/rotation?environment=prod", headers=lister(keyless_config))
    assert r.status_code == 503
    error = r.get_json()["error"]
    assert error["code"] == "sync_failed"
    assert "rotation policy is invalid" in error["message"]
    assert "default_max_age_days" in error["message"]
    record = read_audit(keyless_config)[-1]
    assert (record["event"], record["outcome"], record["error"]) == (
        "rotation.check",
        "error",
        "sync_failed",
    )


def test_a_shallow_served_repository_is_503_not_every_key_fresh(config, tmp_path, aged_repo):
    shallow = tmp_path / "shallow"
    source = f"file://{aged_repo.repo.path}"
    git(tmp_path, "clone", "-q", "--depth", "1", source, str(shallow))
    app = create_app(replace(config, sops_files_path=shallow / "secrets"))
    r = app.test_client().get("/api/v1/rotation?environment=prod", headers=lister(config))
    assert r.status_code == 503 and "shallow clone" in r.get_json()["error"]["message"]


def test_secrets_outside_git_are_400(config, tmp_path, aged_repo):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "prod.enc.yaml").write_bytes(
        (aged_repo.repo.secrets_dir / "prod.enc.yaml").read_bytes()
    )
    app = create_app(replace(config, sops_files_path=plain))
    r = app.test_client().get("/api/v1/rotation?environment=prod", headers=lister(config))
    assert r.status_code == 400 and "Git" in r.get_json()["error"]["message"]


def test_git_history_is_read_from_the_served_ref_not_the_work_tree(
    client, keyless_config, aged_repo
):
    git(aged_repo.repo.path, "checkout", "-q", "--detach", aged_repo.api_key)
    r = client.get("/api/v1/rotation?environment=prod", headers=lister(keyless_config))
    body = r.get_json()
    assert body["version"] == aged_repo.api_key
    assert {k["key"]: k["last_changed"] for k in body["keys"]}["LOG_LEVEL"] == aged_repo.first
