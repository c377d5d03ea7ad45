"""GET /api/v1/history/{env}/{key} and ?version= reads, through the real Flask app on real
Git repositories of real sops files."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace

import pytest
from support.brokers import read_audit
from support.repos import SOPS_BIN, git
from support.tokens import bearer, make_token

from broker.store import history
from broker.web.app import create_app


@pytest.fixture(autouse=True)
def _cold_caches():
    history.clear_caches()


def sops_set(repo, environment: str, key: str, value: object) -> None:
    index = "".join(f"[{json.dumps(s)}]" for s in key.split("/"))
    subprocess.run(
        [SOPS_BIN, "set", "--value-stdin", f"secrets/{environment}.enc.yaml", index],
        input=json.dumps(value).encode(),
        cwd=repo.path,
        capture_output=True,
        check=True,
    )


def commit(repo, message: str) -> str:
    git(repo.path, "add", "-A")
    git(repo.path, "commit", "-q", "-m", message)
    return git(repo.path, "rev-parse", "HEAD")


def lister(config, **scope) -> dict[str, str]:
    return bearer(make_token(config, permissions=("secrets:list",), **scope))


def reader(config, **scope) -> dict[str, str]:
    return bearer(make_token(config, permissions=("secrets:read",), **scope))


# -- history ------------------------------------------------------------------------------------


def test_history_lists_versions_newest_first_with_the_contract_fields(client, config, secrets_repo):
    added = secrets_repo.commits[0]
    sops_set(secrets_repo, "prod", "API_KEY", "rotated-prod-key")
    changed = commit(secrets_repo, "prod: rotate API_KEY")
    sops_set(secrets_repo, "prod", "DATABASE_URL", "postgres://other")
    commit(secrets_repo, "prod: DATABASE_URL")  # same file, another key: not listed
    r = client.get("/api/v1/history/prod/API_KEY", headers=lister(config))
    assert r.status_code == 200
    body = r.get_json()
    assert body["environment"] == "prod" and body["key"] == "API_KEY"
    assert [(v["version"], v["change"]) for v in body["versions"]] == [
        (changed, "changed"),
        (added, "added"),
    ]
    newest = body["versions"][0]
    assert newest["author"] == "Ada Tester" and newest["message"] == "prod: rotate API_KEY"
    assert len(newest["committed_at"]) == 20 and newest["committed_at"].endswith("Z")
    assert "rotated-prod-key" not in r.get_data(as_text=True)


def test_a_removed_key_still_has_its_history(client, config, secrets_repo):
    subprocess.run(
        [SOPS_BIN, "unset", "secrets/dev.enc.yaml", '["DEBUG"]'],
        cwd=secrets_repo.path,
        check=True,
        capture_output=True,
    )
    removed = commit(secrets_repo, "dev: no DEBUG")
    r = client.get("/api/v1/history/dev/DEBUG", headers=lister(config))
    assert r.status_code == 200
    assert r.get_json()["versions"][0] == {**r.get_json()["versions"][0], "version": removed}
    assert r.get_json()["versions"][0]["change"] == "removed"


def test_history_is_read_at_the_served_ref_not_the_work_tree(config, secrets_repo):
    first = secrets_repo.commits[0]
    git(secrets_repo.path, "branch", "served", first)
    sops_set(secrets_repo, "prod", "API_KEY", "newer")
    commit(secrets_repo, "prod: newer API_KEY")
    sops_set(secrets_repo, "prod", "API_KEY", "uncommitted")
    client = create_app(replace(config, git_ref="served")).test_client()
    r = client.get("/api/v1/history/prod/API_KEY", headers=lister(config))
    assert [v["version"] for v in r.get_json()["versions"]] == [first]


def test_unknown_key_and_environment_are_404(client, config):
    headers = lister(config)
    r = client.get("/api/v1/history/dev/NEVER_THERE", headers=headers)
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"
    r = client.get("/api/v1/history/qa/PORT", headers=headers)
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"


def test_history_needs_list_permission_and_the_key_in_scope(client, config):
    r = client.get("/api/v1/history/dev/PORT", headers=reader(config))
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "permission_denied"
    r = client.get("/api/v1/history/dev/PORT", headers=lister(config, key_pattern="DATABASE_*"))
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "scope_denied"
    r = client.get("/api/v1/history/prod/API_KEY", headers=lister(config, environment="dev"))
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "scope_denied"


def test_history_is_audited_and_uses_no_usage_count(client, config, secrets_repo):
    token = make_token(config, permissions=("secrets:list", "secrets:read"), usage_limit=1)
    for _ in range(3):
        r = client.get("/api/v1/history/dev/API_KEYS/openai", headers=bearer(token))
        assert r.status_code == 200
    assert client.get("/api/v1/vault/dev/PORT", headers=bearer(token)).status_code == 200
    records = [r for r in read_audit(config) if r["event"] == "secret.history"]
    assert len(records) == 3
    assert records[0]["key"] == "API_KEYS/openai" and records[0]["outcome"] == "success"
    assert records[0]["version"] == secrets_repo.commits[-1]


def test_outside_git_history_is_empty_for_a_key_that_exists(tmp_path, config, secrets_repo):
    plain_dir = tmp_path / "plain-secrets"
    plain_dir.mkdir()
    shutil.copy(secrets_repo.secrets_dir / "dev.enc.yaml", plain_dir / "dev.enc.yaml")
    client = create_app(replace(config, sops_files_path=plain_dir)).test_client()
    headers = lister(config)
    r = client.get("/api/v1/history/dev/PORT", headers=headers)
    assert r.status_code == 200 and r.get_json()["versions"] == []
    assert client.get("/api/v1/history/dev/NOPE", headers=headers).status_code == 404
    assert client.get("/api/v1/history/prod/API_KEY", headers=headers).status_code == 404


# -- ?version= -------------------------------------------------------------------------------------


def test_a_value_is_read_as_of_an_older_commit_full_or_abbreviated(client, config, secrets_repo):
    first = secrets_repo.commits[0]
    sops_set(secrets_repo, "prod", "API_KEY", "second-value")
    second = commit(secrets_repo, "prod: API_KEY")
    headers = reader(config)
    now = client.get("/api/v1/vault/prod/API_KEY", headers=headers).get_json()
    assert now["value"] == "second-value" and now["version"] == second
    for version in (first, first[:7], first.upper()):
        r = client.get(f"/api/v1/vault/prod/API_KEY?version={version}", headers=headers)
        assert r.status_code == 200
        assert r.get_json()["value"] == "prod-api-key" and r.get_json()["version"] == first


def test_a_commit_on_an_unmerged_branch_is_404_and_leaks_nothing(client, config, secrets_repo):
    git(secrets_repo.path, "checkout", "-q", "-b", "unmerged")
    sops_set(secrets_repo, "prod", "API_KEY", "branch-only-secret")
    branch_commit = commit(secrets_repo, "unmerged change")
    git(secrets_repo.path, "checkout", "-q", "main")
    headers = reader(config)
    for version in (branch_commit, branch_commit[:10]):
        r = client.get(f"/api/v1/vault/prod/API_KEY?version={version}", headers=headers)
        assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"
        assert "branch-only-secret" not in r.get_data(as_text=True)
    served = client.get("/api/v1/vault/prod/API_KEY", headers=headers).get_json()
    assert served["value"] == "prod-api-key"


@pytest.mark.parametrize("version", ["HEAD", "main", "abc12", "HEAD~1", "g" * 40, "a" * 41])
def test_a_version_that_is_not_7_to_40_hex_digits_is_400(client, config, version):
    r = client.get(f"/api/v1/vault/prod/API_KEY?version={version}", headers=reader(config))
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "bad_request"


def test_an_unknown_commit_is_404(client, config):
    r = client.get(f"/api/v1/vault/prod/API_KEY?version={'0' * 40}", headers=reader(config))
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"


def test_a_version_outside_git_is_400(tmp_path, config, secrets_repo):
    plain_dir = tmp_path / "plain-secrets"
    plain_dir.mkdir()
    shutil.copy(secrets_repo.secrets_dir / "prod.enc.yaml", plain_dir / "prod.enc.yaml")
    client = create_app(replace(config, sops_files_path=plain_dir)).test_client()
    version = secrets_repo.commits[0]
    r = client.get(f"/api/v1/vault/prod/API_KEY?version={version}", headers=reader(config))
    assert r.status_code == 400
