"""Secrets files a pusher can commit to hurt the broker (SPEC §4): a YAML alias bomb, a
decrypted document over 16 MiB, a file over 64 MiB, names that are no environment's.

Reads answer 503 decrypt_failed at once; history, rotation (API and CLI) and the dashboard
skip such a file and say so; the worker's memory stays where it was and the other
environments are served throughout. Against a real broker process and real CLI processes
(each run under a memory limit: a regression must fail, not take the machine with it).
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from support.aged import sops_set
from support.brokers import RunningBroker, start_broker, stop_broker
from support.openapi import assert_conforms
from support.repos import DEV_SECRETS, SecretsRepo, git
from support.tokens import bearer, make_token

from broker.config import Config
from broker.store import history

MIB = 1024 * 1024
CLI = [sys.executable, "-c", "from cli.main import main; main()"]
ROOT = Path(__file__).resolve().parent.parent
ANCHORS = "its YAML holds anchors or aliases"
LEAVES = {c: f"leaf-{c}" for c in "abcdefghij"}
LEAKS = ("Traceback", 'File "', ".py", "/tmp/", "enc.yaml", "leaf-")
MISNAMED = ("Bad Name", "UPPER")


def alias_bomb(encrypted: bytes, anchored: str = "l0", levels: int = 9) -> bytes:
    """A SOPS file whose `anchored` mapping is aliased ten times on each of `levels - 1`
    levels: under 3 KB that, expanded, hold 10**levels leaves. sops encrypts values, not
    the YAML around them, so the ENC[...] leaves stay as sops wrote them."""
    text = encrypted.decode()
    assert f"\n{anchored}:\n" in f"\n{text}"
    text = re.sub(rf"(?m)^{anchored}:$", f"{anchored}: &l0", text, count=1)
    levels_text = "".join(
        f"l{i}: &l{i} {{" + ", ".join(f"{c}: *l{i - 1}" for c in "abcdefghij") + "}\n"
        for i in range(1, levels)
    )
    return text.replace("\nsops:\n", f"\n{levels_text}sops:\n", 1).encode()


@pytest.fixture(autouse=True)
def _cold_caches() -> None:
    history.clear_caches()


@pytest.fixture
def hostile_repo(secrets_repo: SecretsRepo) -> SecretsRepo:
    """dev and prod, plus `bomb` (an alias bomb) and two files whose names are no
    environment's."""
    path = secrets_repo.write("bomb", {"l0": LEAVES})
    path.write_bytes(alias_bomb(path.read_bytes()))
    for name in MISNAMED:
        secrets_repo.write(name, {"A": "misnamed-value"})
    secrets_repo.commit("secrets: an alias bomb and two misnamed files")
    return secrets_repo


@pytest.fixture
def hostile_broker(hostile_repo: SecretsRepo, config: Config, tmp_path: Path):
    broker = start_broker(config, tmp_path, workers=1)
    yield broker
    stop_broker(broker)


def worker_rss(broker: RunningBroker) -> int:
    """Resident bytes of the broker's worker processes (one worker here)."""
    pid = broker.process.pid
    total = 0
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        status = Path(f"/proc/{child}/status").read_text()
        total += int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024
    return total


def timed_get(url: str, token: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    answer = requests.get(url, headers=bearer(token), timeout=10)
    return answer, time.monotonic() - started


def assert_refused(answer: requests.Response, reason: str) -> None:
    assert answer.status_code == 503, answer.text[:300]
    error = answer.json()["error"]
    assert error["code"] == "decrypt_failed" and reason in error["message"]
    assert not any(leak in answer.text for leak in LEAKS), answer.text


# -- reads, history and rotation against a real broker ------------------------------------------


def test_an_alias_bomb_is_refused_within_a_second_and_the_worker_is_unharmed(
    hostile_broker, config
):
    url, token = hostile_broker.url, make_token(config)
    # Every path the bomb takes has run once on a sound file: what follows is the bomb's.
    for path in ("/api/v1/history/dev/PORT", "/api/v1/vault/dev/PORT", "/api/v1/vault/dev"):
        assert timed_get(url + path, token)[0].status_code == 200
    assert timed_get(url + "/api/v1/rotation?environment=dev", token)[0].status_code == 200
    before = worker_rss(hostile_broker)
    for path in (
        "/api/v1/vault/bomb/l0/a",
        "/api/v1/vault/bomb",
        "/api/v1/history/bomb/l0/a",
        "/api/v1/rotation?environment=bomb",
        "/api/v1/vault/bomb/l0/a",  # again: the refusal is remembered
    ):
        answer, seconds = timed_get(url + path, token)
        assert_refused(answer, ANCHORS)
        assert seconds < 1.0, (path, seconds)
    assert worker_rss(hostile_broker) - before < 8 * MIB
    answer, _ = timed_get(url + "/api/v1/vault/dev/DATABASE_URL", token)
    assert answer.json()["value"] == DEV_SECRETS["DATABASE_URL"]
    log = hostile_broker.log()
    assert "Traceback" not in log and "bomb.enc.yaml" not in log and "leaf-" not in log


def test_a_document_over_16_mib_is_refused_and_the_refusal_remembered(
    secrets_repo, config, tmp_path
):
    secrets_repo.write("big", {"BIG": "x" * (16 * MIB + 1024), "SMALL": "small"})
    secrets_repo.commit("secrets: a document over 16 MiB")
    broker = start_broker(config, tmp_path, workers=1)
    try:
        token = make_token(config)
        answer, _ = timed_get(f"{broker.url}/api/v1/vault/big/SMALL", token)
        assert_refused(answer, "its decrypted document is over 16 MiB")
        answer, seconds = timed_get(f"{broker.url}/api/v1/vault/big/SMALL", token)
        assert_refused(answer, "over 16 MiB")
        assert seconds < 0.5  # sops is not run again
        for path in ("/api/v1/history/big/SMALL", "/api/v1/rotation?environment=big"):
            assert_refused(timed_get(broker.url + path, token)[0], "over 16 MiB")
        assert timed_get(f"{broker.url}/api/v1/vault/dev/PORT", token)[0].json()["value"] == 8080
    finally:
        stop_broker(broker)


def test_a_file_over_64_mib_is_refused_unread(secrets_repo, config, tmp_path):
    with (secrets_repo.secrets_dir / "huge.enc.yaml").open("wb") as f:
        f.truncate(64 * MIB + 1)  # zeros: cheap to write and to compress
    secrets_repo.commit("secrets: a file over 64 MiB")
    broker = start_broker(config, tmp_path, workers=1)
    try:
        token = make_token(config)
        assert timed_get(f"{broker.url}/api/v1/history/dev/PORT", token)[0].status_code == 200
        before = worker_rss(broker)
        for path in ("/api/v1/vault/huge/A", "/api/v1/history/huge/A"):
            answer, seconds = timed_get(broker.url + path, token)
            assert_refused(answer, "the file is over 64 MiB")
            assert seconds < 1.0
        assert worker_rss(broker) - before < 8 * MIB
    finally:
        stop_broker(broker)


# -- the dashboard against the same broker --------------------------------------------------------


def sign_in(url: str, token: str) -> requests.Session:
    http = requests.Session()
    form = http.get(f"{url}/ui/", timeout=10).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    answer = http.post(
        f"{url}/ui/login", data={"token": token, "csrf": csrf}, allow_redirects=False, timeout=10
    )
    assert answer.status_code == 303
    return http


def test_the_dashboard_skips_refused_and_misnamed_files_and_says_so(hostile_broker, config):
    everything = sign_in(hostile_broker.url, make_token(config, permissions=("secrets:list",)))
    page = everything.get(f"{hostile_broker.url}/ui/", timeout=10)
    assert page.status_code == 200
    assert 'href="/ui/env/dev"' in page.text and 'href="/ui/env/prod"' in page.text
    assert f"not served: {ANCHORS}" in page.text and 'href="/ui/env/bomb"' not in page.text
    assert "2 files in the secrets directory are not served" in page.text
    assert not any(name in page.text for name in MISNAMED)
    refused = everything.get(f"{hostile_broker.url}/ui/env/bomb", timeout=10)
    assert refused.status_code == 503 and ANCHORS in refused.text
    prod_only = make_token(config, environment="prod", permissions=("secrets:list",))
    page = sign_in(hostile_broker.url, prod_only).get(f"{hostile_broker.url}/ui/", timeout=10)
    assert page.status_code == 200 and "not served" not in page.text


# -- one refused version in a file's history -----------------------------------------------------


@pytest.fixture
def bombed_once(secrets_repo: SecretsRepo, age_key_file: Path) -> dict[str, str]:
    """dev as committed, then an alias bomb over it, then dev restored byte for byte, then
    PORT changed: commit SHAs by name."""
    path = secrets_repo.secrets_dir / "dev.enc.yaml"
    sound = path.read_bytes()
    path.write_bytes(alias_bomb(sound, anchored="API_KEYS"))
    shas = {"first": secrets_repo.commits[0], "bomb": secrets_repo.commit("dev: a bomb")}
    path.write_bytes(sound)
    shas["restored"] = secrets_repo.commit("dev: restored")
    sops_set(secrets_repo, "dev", "PORT", "9090", age_key_file)
    shas["port"] = secrets_repo.commit("dev: PORT")
    return shas


def test_history_skips_a_refused_version_and_compares_around_it(client, config, bombed_once):
    token = make_token(config)
    response = client.get("/api/v1/history/dev/DATABASE_URL", headers=bearer(token))
    assert_conforms(config, "GET", "/api/v1/history/{environment}/{key}", response)
    answer = response.get_json()
    assert [(v["version"], v["change"]) for v in answer["versions"]] == [
        (bombed_once["first"], "added")  # not "added" again where the bomb was undone
    ]
    assert [(v["version"], v["reason"]) for v in answer["skipped"]] == [
        (bombed_once["bomb"], ANCHORS)
    ]
    port = client.get("/api/v1/history/dev/PORT", headers=bearer(token)).get_json()
    assert [v["change"] for v in port["versions"]] == ["changed", "added"]
    rotation = client.get("/api/v1/rotation?environment=dev", headers=bearer(token)).get_json()
    ages = {k["key"]: k["last_changed"] for k in rotation["keys"]}
    assert ages["DATABASE_URL"] == bombed_once["first"] and ages["PORT"] == bombed_once["port"]
    untouched = client.get("/api/v1/history/prod/API_KEY", headers=bearer(token)).get_json()
    assert "skipped" not in untouched  # the field appears only when something was skipped


def test_the_dashboard_lists_the_skipped_versions_of_a_key(client, config, bombed_once):
    form = client.get("/ui/").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    client.post("/ui/login", data={"token": make_token(config), "csrf": csrf})
    page = client.get("/ui/env/dev/keys/DATABASE_URL")
    assert page.status_code == 200
    assert "Skipped 1 version" in page.text and bombed_once["bomb"][:12] in page.text


# -- the CLI --------------------------------------------------------------------------------------


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2048 * MIB, 2048 * MIB))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        preexec_fn=_limit_memory,  # a regression fails here instead of filling the machine
    )


def test_rotation_check_skips_refused_and_misnamed_files_and_says_so(hostile_repo):
    found = run_cli("rotation", "check", "--repo", str(hostile_repo.path), "--json")
    assert found.returncode == 0, found.stderr
    assert {s["environment"] for s in json.loads(found.stdout)} == {"dev", "prod"}
    assert f"note: skipped secrets/bomb.enc.yaml: {ANCHORS}" in found.stderr
    for name in MISNAMED:
        assert f"note: skipped secrets/{name}.enc.yaml: its name is not" in found.stderr
    one = run_cli("rotation", "check", "--repo", str(hostile_repo.path), "--environment", "bomb")
    assert one.returncode == 1
    assert f"error: secrets/bomb.enc.yaml is not served: {ANCHORS}" in one.stderr


def test_secrets_commands_refuse_a_bomb_and_check_flags_it(hostile_repo):
    for args in (("list", "bomb"), ("history", "bomb", "l0/a"), ("set", "bomb", "K", "--value=v")):
        found = run_cli("secrets", *args, "--repo", str(hostile_repo.path))
        assert found.returncode == 1, found
        assert f"error: secrets/bomb.enc.yaml: {ANCHORS}" in found.stderr
    checked = run_cli("secrets", "check", "--repo", str(hostile_repo.path))
    assert checked.returncode == 1
    assert f"secrets/bomb.enc.yaml: {ANCHORS}, so the broker does not serve it" in checked.stdout
    for name in MISNAMED:
        assert f"secrets/{name}.enc.yaml: its name is not" in checked.stdout


def test_secrets_history_notes_a_skipped_version(secrets_repo, bombed_once):
    found = run_cli("secrets", "history", "dev", "PORT", "--repo", str(secrets_repo.path), "--json")
    assert found.returncode == 0, found.stderr
    answer = json.loads(found.stdout)
    assert [v["version"] for v in answer["versions"]] == [bombed_once["port"], bombed_once["first"]]
    assert [v["version"] for v in answer["skipped"]] == [bombed_once["bomb"]]
    assert f"note: skipped {bombed_once['bomb'][:12]}" in found.stderr


def test_anchors_in_the_policy_file_are_a_policy_error(secrets_repo):
    policy = "rotation:\n  default_max_age_days: &d 30\n  rules:\n    - max_age_days: *d\n"
    (secrets_repo.path / ".vanta.yaml").write_text(policy)
    git(secrets_repo.path, "add", ".vanta.yaml")
    found = run_cli("rotation", "check", "--repo", str(secrets_repo.path))
    assert found.returncode == 1
    assert "error: .vanta.yaml: YAML anchors and aliases are not allowed" in found.stderr
