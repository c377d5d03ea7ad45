"""vanta-cli rotation check (SPEC §15): table, --json, --notify, --fail-on; no SOPS key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.aged import SECRET_VALUES, AgedRepo, build_aged_repo
from support.brokers import free_port

from cli.commands.rotation import rotation

# `vanta-cli rotation` once cli/main.py registers the group; the group itself meanwhile.
CLI = [sys.executable, "-c", "from cli.commands.rotation import rotation; rotation()"]


@pytest.fixture
def aged_repo(tmp_path: Path, age_key, age_key_file: Path) -> AgedRepo:
    return build_aged_repo(tmp_path / "aged", age_key.recipient, age_key_file)


@pytest.fixture
def no_sops_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No decryption key anywhere sops would look for one."""
    monkeypatch.delenv("SOPS_AGE_KEY_FILE", raising=False)
    monkeypatch.delenv("SOPS_AGE_KEY", raising=False)
    home = tmp_path / "empty-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "check", *args], capture_output=True, text=True, env=dict(os.environ), timeout=120
    )


def invoke(*args: str):
    return CliRunner().invoke(rotation, ["check", *args], catch_exceptions=False)


# -- a webhook receiver: a real HTTP server on loopback ---------------------------------------


@dataclass
class Webhook:
    url: str
    answer_status: int = 200
    received: list[tuple[str, str, bytes]] = field(default_factory=list)  # path, type, body


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            hook.received.append((self.path, self.headers.get("Content-Type", ""), body))
            self.send_response(hook.answer_status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXXX"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hook
    server.shutdown()
    server.server_close()
    thread.join()


# -- output ---------------------------------------------------------------------------------


def test_table_lists_every_key_most_urgent_first(aged_repo, no_sops_key):
    result = invoke("--repo", str(aged_repo.repo.path))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "STATUS", "ENVIRONMENT", "KEY", "AGE", "MAX", "LAST", "CHANGED", "COMMIT",
    ]  # fmt: skip
    rows = [line.split()[:5] for line in lines[1:7]]
    assert rows == [
        ["overdue", "prod", "DATABASE_URL", "100d", "30d"],
        ["due", "prod", "API_KEY", "20d", "30d"],  # 10 days left, like the next
        ["due", "staging", "API_TOKEN", "80d", "90d"],
        ["ok", "prod", "LOG_LEVEL", "5d", "90d"],
        ["ok", "dev", "API_KEYS/openai", "100d", "365d"],
        ["ok", "dev", "DATABASE_URL", "100d", "365d"],
    ]
    assert aged_repo.first[:12] in lines[1]
    assert lines[-1] == "6 keys: 1 overdue, 2 due, 3 ok"


def test_json_is_the_list_of_contract_objects(aged_repo, no_sops_key):
    result = invoke("--repo", str(aged_repo.repo.path), "--json", "--environment", "prod")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [(k["key"], k["status"]) for k in report] == [
        ("DATABASE_URL", "overdue"),
        ("API_KEY", "due"),
        ("LOG_LEVEL", "ok"),
    ]
    first = report[0]
    assert set(first) == {
        "environment", "key", "last_changed", "changed_at", "age_days", "max_age_days", "status",
    }  # fmt: skip
    assert first["last_changed"] == aged_repo.first and len(first["last_changed"]) == 40
    assert first["changed_at"].endswith("Z") and first["age_days"] == 100


def test_runs_from_a_subdirectory_of_the_checkout(aged_repo, no_sops_key, monkeypatch):
    monkeypatch.chdir(aged_repo.repo.secrets_dir)
    result = invoke("--json")
    assert result.exit_code == 0 and len(json.loads(result.output)) == 6


# -- --notify ---------------------------------------------------------------------------------


def test_notify_posts_names_only_to_the_webhook(aged_repo, no_sops_key, webhook):
    result = run_check("--repo", str(aged_repo.repo.path), "--notify", webhook.url)
    assert result.returncode == 0, result.stderr
    assert len(webhook.received) == 1
    path, content_type, raw = webhook.received[0]
    assert path == "/services/T000/B000/XXXX" and content_type == "application/json"
    body = json.loads(raw)
    assert set(body) == {"text", "due", "overdue"}
    assert body["overdue"] == ["prod/DATABASE_URL"]
    assert body["due"] == ["prod/API_KEY", "staging/API_TOKEN"]
    assert "1 overdue, 2 due" in body["text"] and "prod/DATABASE_URL" in body["text"]
    text = raw.decode()
    assert not any(value in text for value in SECRET_VALUES)
    assert "overdue" in result.stdout  # the report is printed as usual


def test_notify_sends_nothing_when_nothing_is_due(aged_repo, no_sops_key, webhook):
    result = run_check("--repo", str(aged_repo.repo.path), "-e", "dev", "--notify", webhook.url)
    assert result.returncode == 0, result.stderr
    assert webhook.received == []


def test_notify_url_can_come_from_the_environment(aged_repo, no_sops_key, webhook, monkeypatch):
    monkeypatch.setenv("VANTA_ROTATION_WEBHOOK", webhook.url)
    assert run_check("--repo", str(aged_repo.repo.path), "-e", "staging").returncode == 0
    assert json.loads(webhook.received[0][2])["due"] == ["staging/API_TOKEN"]


def test_a_failing_webhook_is_exit_1_without_naming_the_url(aged_repo, no_sops_key, webhook):
    webhook.answer_status = 500
    result = run_check("--repo", str(aged_repo.repo.path), "--notify", webhook.url)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: the --notify webhook answered HTTP 500"
    assert "DATABASE_URL" in result.stdout  # the report came first
    unreachable = f"http://127.0.0.1:{free_port()}/secret-hook-path"
    result = run_check("--repo", str(aged_repo.repo.path), "--notify", unreachable)
    assert result.returncode == 1
    assert "could not be reached" in result.stderr and "secret-hook-path" not in result.stderr


# -- exit status ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ([], 0),
        (["--fail-on", "overdue"], 1),
        (["--fail-on", "due"], 1),
        (["-e", "staging", "--fail-on", "overdue"], 0),  # due only
        (["-e", "staging", "--fail-on", "due"], 1),
        (["-e", "dev", "--fail-on", "due"], 0),  # ok only
        (["-e", "prod", "--fail-on", "due", "--json"], 1),
    ],
)
def test_fail_on_changes_only_the_exit_status(aged_repo, no_sops_key, args, code):
    result = run_check("--repo", str(aged_repo.repo.path), *args)
    assert result.returncode == code, result.stderr
    assert result.stderr == ""
    assert "ok" in result.stdout  # the full report, whatever the exit status


def test_an_environment_without_a_file_is_exit_1(aged_repo, no_sops_key):
    result = run_check("--repo", str(aged_repo.repo.path), "--environment", "qa")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: environment 'qa' has no file secrets/qa.enc.yaml at HEAD"
    )


def test_usage_errors_are_exit_2(aged_repo):
    assert run_check("--repo", str(aged_repo.repo.path), "-e", "../prod").returncode == 2
    assert run_check("--fail-on", "soon").returncode == 2


def test_a_broken_policy_is_exit_1_naming_the_field(aged_repo, no_sops_key):
    (aged_repo.repo.path / ".vanta.yaml").write_text("rotation:\n  rules:\n    - max_age: 3\n")
    result = run_check("--repo", str(aged_repo.repo.path))
    assert result.returncode == 1
    assert result.stderr.strip() == "error: .vanta.yaml: rotation.rules[0]: unknown field 'max_age'"


def test_a_shallow_clone_is_exit_1_rather_than_every_key_looking_new(
    aged_repo, no_sops_key, tmp_path
):
    shallow = tmp_path / "shallow"
    source = f"file://{aged_repo.repo.path}"
    subprocess.run(["git", "clone", "-q", "--depth", "1", source, str(shallow)], check=True)
    result = run_check("--repo", str(shallow))
    assert result.returncode == 1
    assert "shallow clone" in result.stderr and "fetch-depth: 0" in result.stderr
    assert result.stdout == ""  # no report that would say every key is fresh


def test_outside_a_git_checkout_is_exit_1(tmp_path, no_sops_key):
    result = run_check("--repo", str(tmp_path))
    assert result.returncode == 1 and "not inside a Git work tree" in result.stderr
