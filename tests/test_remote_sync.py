"""Following a Git remote: fast-forwards only, signed webhooks, allowed signers, restarts."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from support.brokers import read_audit, start_broker, stop_broker
from support.repos import PROD_SECRETS, git
from support.tokens import bearer, make_token

from broker.config import SecretValue
from broker.store.remote import MirrorError
from broker.web.app import create_app

HOOK_SECRET = "webhook-secret-for-tests"


def signed(body: bytes, secret: str = HOOK_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json"}


@pytest.fixture
def remote_config(config, secrets_repo, tmp_path):
    return replace(
        config,
        git_remote=SecretValue(str(secrets_repo.path)),
        git_branch="main",
        git_cache=tmp_path / "git-cache",
        webhook_secret=SecretValue(HOOK_SECRET),
        git_poll_seconds=0,
        sops_files_path=Path("secrets"),
    )


def read_api_key(client, config) -> dict:
    token = make_token(config, environment="prod")
    return client.get("/api/v1/vault/prod/API_KEY", headers=bearer(token)).get_json()


def push_new_value(repo, value: str) -> str:
    return repo.write_and_commit(
        "prod", {**PROD_SECRETS, "API_KEY": value}, "secrets: set prod/API_KEY"
    )


def test_new_commit_is_served_after_a_signed_webhook(remote_config, secrets_repo):
    client = create_app(remote_config, background=False).test_client()
    first = read_api_key(client, remote_config)
    assert first["version"] == secrets_repo.commits[-1]
    new_sha = push_new_value(secrets_repo, "rotated-key")
    assert read_api_key(client, remote_config)["value"] == "prod-api-key"
    body = b'{"ref": "refs/heads/main"}'
    r = client.post("/api/v1/sync", data=body, headers=signed(body))
    assert r.status_code == 200 and r.get_json() == {"version": new_sha}
    after = read_api_key(client, remote_config)
    assert after["value"] == "rotated-key" and after["version"] == new_sha
    record = read_audit(remote_config)[-2]
    assert record["event"] == "git.sync" and record["outcome"] == "success"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Hub-Signature-256": "sha256=00"},
        signed(b"other body"),
        signed(b"{}", secret="wrong-secret"),
    ],
)
def test_bad_or_missing_signature_is_401(remote_config, headers):
    client = create_app(remote_config, background=False).test_client()
    r = client.post("/api/v1/sync", data=b"{}", headers=headers)
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "signature_invalid"


def test_without_webhook_secret_the_endpoint_is_404(remote_config):
    client = create_app(replace(remote_config, webhook_secret=None), background=False).test_client()
    body = b"{}"
    assert client.post("/api/v1/sync", data=body, headers=signed(body)).status_code == 404


def test_force_push_is_refused_audited_and_survives_restart(remote_config, secrets_repo):
    client = create_app(remote_config, background=False).test_client()
    served = read_api_key(client, remote_config)["version"]
    # Rewrite history on the remote: drop the served commit, push another in its place.
    git(secrets_repo.path, "checkout", "-q", "--orphan", "rewritten")
    git(secrets_repo.path, "commit", "-q", "-m", "rewritten history")
    git(secrets_repo.path, "branch", "-q", "-M", "main")
    body = b"{}"
    r = client.post("/api/v1/sync", data=body, headers=signed(body))
    assert r.status_code == 409
    assert r.get_json()["error"]["code"] == "non_fast_forward"
    assert r.get_json()["version"] == served and r.get_json()["request_id"]
    assert read_api_key(client, remote_config)["version"] == served
    record = read_audit(remote_config)[-2]
    assert (record["event"], record["outcome"], record["error"]) == (
        "git.sync",
        "denied",
        "non_fast_forward",
    )
    # A restarted broker remembers what it served and refuses the rewrite again.
    restarted = create_app(remote_config, background=False).test_client()
    assert read_api_key(restarted, remote_config)["version"] == served


def test_remote_that_cannot_be_fetched_is_503_and_keeps_serving(remote_config, tmp_path):
    app = create_app(remote_config, background=False)
    client = app.test_client()
    served = read_api_key(client, remote_config)["version"]
    app.extensions["vanta"].mirror._git("config", "remote.origin.url", str(tmp_path / "gone"))
    body = b"{}"
    r = client.post("/api/v1/sync", data=body, headers=signed(body))
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "sync_failed"
    assert str(tmp_path) not in r.get_data(as_text=True)
    assert read_api_key(client, remote_config)["version"] == served


def test_poller_serves_a_new_commit_without_webhook(remote_config, secrets_repo):
    app = create_app(replace(remote_config, git_poll_seconds=1))
    client = app.test_client()
    try:
        new_sha = push_new_value(secrets_repo, "polled-key")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if read_api_key(client, remote_config)["version"] == new_sha:
                break
            time.sleep(0.1)
        assert read_api_key(client, remote_config)["value"] == "polled-key"
    finally:
        app.extensions["vanta"].poller.stop()  # or it fetches every second for the session


# -- allowed signers ----------------------------------------------------------------------


@pytest.fixture
def signer(tmp_path):
    key = tmp_path / "signer"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ada", "-f", str(key)], check=True
    )
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"ada@example.com {key.with_suffix('.pub').read_text().strip()}\n")
    return key, allowed


def sign_flags(key: Path) -> list[str]:
    return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}"]


def test_only_commits_from_allowed_signers_are_served(remote_config, secrets_repo, signer):
    key, allowed = signer
    repo = secrets_repo.path
    git(repo, *sign_flags(key), "commit", "-q", "--amend", "-S", "--no-edit")
    signed_base = git(repo, "rev-parse", "HEAD")
    cfg = replace(remote_config, git_allowed_signers=allowed)
    client = create_app(cfg, background=False).test_client()
    assert read_api_key(client, cfg)["version"] == signed_base

    push_new_value(secrets_repo, "unsigned-value")
    body = b"{}"
    r = client.post("/api/v1/sync", data=body, headers=signed(body))
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "unsigned_commit"
    assert read_api_key(client, cfg)["value"] == "prod-api-key"

    git(repo, "reset", "-q", "--hard", signed_base)
    secrets_repo.write("prod", {**PROD_SECRETS, "API_KEY": "signed-value"})
    git(repo, "add", "-A")
    git(repo, *sign_flags(key), "commit", "-q", "-S", "-m", "secrets: set prod/API_KEY")
    r = client.post("/api/v1/sync", data=body, headers=signed(body))
    assert r.status_code == 200
    assert read_api_key(client, cfg)["value"] == "signed-value"


def test_unsigned_commit_at_start_up_serves_nothing(remote_config, signer):
    _, allowed = signer
    app = create_app(replace(remote_config, git_allowed_signers=allowed), background=False)
    client = app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["failing"] == ["tree"]
    token = make_token(remote_config, environment="prod")
    r = client.get("/api/v1/vault/prod/API_KEY", headers=bearer(token))
    assert r.status_code == 503 and "prod-api-key" not in r.get_data(as_text=True)


# -- two real brokers ----------------------------------------------------------------------


def test_two_brokers_serve_a_pushed_commit_after_webhooks(remote_config, secrets_repo, tmp_path):
    brokers = []
    for n in range(2):
        env = {
            "VANTA_GIT_REMOTE": str(secrets_repo.path),
            "VANTA_GIT_CACHE": str(tmp_path / f"cache-{n}"),
            "VANTA_WEBHOOK_SECRET": HOOK_SECRET,
            "VANTA_GIT_POLL_SECONDS": "0",
            "VANTA_SOPS_FILES_PATH": "secrets",
            "VANTA_AUDIT_LOG": str(tmp_path / f"audit-{n}.jsonl"),
            "VANTA_STATE_DB": str(tmp_path / f"state-{n}.db"),
        }
        brokers.append(start_broker(remote_config, tmp_path, extra_env=env))
    try:
        new_sha = push_new_value(secrets_repo, "both-brokers")
        token = make_token(remote_config, environment="prod")
        body = b'{"after": "x"}'
        for broker in brokers:
            r = requests.post(
                f"{broker.url}/api/v1/sync", data=body, headers=signed(body), timeout=30
            )
            assert r.status_code == 200 and r.json()["version"] == new_sha
        for broker in brokers:
            for _ in range(4):  # several requests, so both workers answer
                r = requests.get(
                    f"{broker.url}/api/v1/vault/prod/API_KEY", headers=bearer(token), timeout=10
                )
                assert r.json()["value"] == "both-brokers"
    finally:
        for broker in brokers:
            stop_broker(broker)


def test_a_mirror_that_cannot_be_set_up_names_no_remote_url(remote_config, tmp_path):
    cache = tmp_path / "broken-cache"
    (cache / "mirror.git").mkdir(parents=True)
    (cache / "mirror.git" / "HEAD").write_text("garbage\n")  # not a repository git accepts
    secret_url = "https://deploy:ghp_SECRETTOKEN@git.example.com/org/secrets.git"
    cfg = replace(remote_config, git_remote=SecretValue(secret_url), git_cache=cache)
    with pytest.raises(MirrorError) as caught:
        create_app(cfg, background=False)
    assert "ghp_SECRETTOKEN" not in str(caught.value) and "example.com" not in str(caught.value)
