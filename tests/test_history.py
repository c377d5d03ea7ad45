"""broker.store.history: key history from real Git repositories by comparing sops ciphertext.

Every repository here is real Git with files encrypted by the real sops binary; no test
gives history a decryption key it could lean on."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support.repos import SOPS_BIN, SecretsRepo, git, make_secrets_repo

from broker.store import history
from broker.store.history import (
    HistoryError,
    _parse_yaml_leaves,
    _scan_sops_layout,
    ciphertext_leaves,
    file_log,
    key_history,
    last_changes,
)
from cli.caching import LRU

DEV_FILE = "secrets/dev.enc.yaml"


@pytest.fixture(autouse=True)
def _cold_caches():
    history.clear_caches()


def sops_set(repo: SecretsRepo, environment: str, key: str, value: object) -> None:
    """Change one value as `sops set` does: the other values keep their ciphertext."""
    index = "".join(f"[{json.dumps(s)}]" for s in key.split("/"))
    subprocess.run(
        [SOPS_BIN, "set", "--value-stdin", f"secrets/{environment}.enc.yaml", index],
        input=json.dumps(value).encode(),
        cwd=repo.path,
        capture_output=True,
        check=True,
    )


def sops_unset(repo: SecretsRepo, environment: str, key: str) -> None:
    index = "".join(f"[{json.dumps(s)}]" for s in key.split("/"))
    subprocess.run(
        [SOPS_BIN, "unset", f"secrets/{environment}.enc.yaml", index],
        cwd=repo.path,
        capture_output=True,
        check=True,
    )


def commit(repo: SecretsRepo, message: str, author: str | None = None) -> str:
    git(repo.path, "add", "-A")
    env = {"GIT_AUTHOR_NAME": author} if author else None
    git(repo.path, "commit", "-q", "-m", message, env=env)
    sha = git(repo.path, "rev-parse", "HEAD")
    repo.commits.append(sha)
    return sha


def changes(repo: SecretsRepo, key: str, environment: str = "dev") -> list[tuple[str, str]]:
    head = git(repo.path, "rev-parse", "HEAD")
    found = key_history(repo.path / ".git", head, f"secrets/{environment}.enc.yaml", key)
    return [(c.commit, c.change) for c in found]


# -- ciphertext leaves ------------------------------------------------------------------------


def encrypt(repo: SecretsRepo, document: dict, relpath: str = DEV_FILE, *args: str) -> bytes:
    return subprocess.run(
        [SOPS_BIN, "encrypt", *args, "--filename-override", relpath]
        + ["--input-type", "json", "--output-type", "yaml", "/dev/stdin"],
        input=json.dumps(document).encode(),
        cwd=repo.path,
        capture_output=True,
        check=True,
    ).stdout


SHAPES = {
    "flat and nested": {"A": "1", "B": {"c": "x", "d": {"e": "deep"}}, "PORT": 8080, "ON": True},
    "keys YAML would not read as strings": {"y": "a", "no": "b", "on": "c", "true": "d", "1": "e"},
    "keys outside the key alphabet": {"with space": "a", "ok": "b", "ü": "c"},
    "lists, nulls and empty groups": {"L": ["a", "b"], "N": None, "E": {}, "K": "v"},
    "an empty document": {},
}


@pytest.mark.parametrize("document", SHAPES.values(), ids=SHAPES.keys())
def test_the_line_scanner_reads_sops_output_exactly_as_the_yaml_parser(secrets_repo, document):
    text = encrypt(secrets_repo, document).decode()
    scanned = _scan_sops_layout(text)
    assert _parse_yaml_leaves(text) == ciphertext_leaves(text.encode())
    if scanned is not None:
        assert scanned == _parse_yaml_leaves(text)


def test_a_standard_sops_file_takes_the_fast_path_and_leaves_out_the_metadata(secrets_repo):
    text = (secrets_repo.secrets_dir / "dev.enc.yaml").read_text()
    scanned = _scan_sops_layout(text)
    assert scanned is not None
    assert set(scanned) == {"DATABASE_URL", "DATABASE_USER", "PORT", "DEBUG"} | {
        "API_KEYS/openai",
        "API_KEYS/stripe",
    }
    assert all(v.startswith("ENC[AES256_GCM,") for v in scanned.values())


def test_values_left_in_plaintext_by_unencrypted_suffix_are_leaves_with_their_type(secrets_repo):
    text = encrypt(
        secrets_repo, {"host_unencrypted": "db", "n_unencrypted": 1, "t_unencrypted": True}
    )
    leaves = ciphertext_leaves(text)
    assert leaves["host_unencrypted"] == "db"
    assert leaves["n_unencrypted"] != leaves["t_unencrypted"]  # 1 == True, but not here


def test_something_that_is_not_yaml_has_no_leaves():
    assert ciphertext_leaves(b"\xff\xfe") == {}
    assert ciphertext_leaves(b"a: [unclosed") == {}
    assert ciphertext_leaves(b"- a list\n") == {}


# -- history of one key ---------------------------------------------------------------------------


def test_history_is_newest_first_and_lists_only_commits_that_changed_the_key(secrets_repo):
    added = secrets_repo.commits[0]
    sops_set(secrets_repo, "dev", "DATABASE_URL", "postgres://new")
    changed = commit(secrets_repo, "dev: rotate DATABASE_URL")
    sops_set(secrets_repo, "dev", "DATABASE_USER", "other")  # same file, other key
    commit(secrets_repo, "dev: DATABASE_USER")
    sops_set(secrets_repo, "prod", "DATABASE_URL", "postgres://prod2")  # other file, same key
    commit(secrets_repo, "prod: DATABASE_URL")
    (secrets_repo.path / "README").write_text("unrelated\n")
    commit(secrets_repo, "docs")
    sops_unset(secrets_repo, "dev", "DATABASE_URL")
    removed = commit(secrets_repo, "dev: drop DATABASE_URL")
    assert changes(secrets_repo, "DATABASE_URL") == [
        (removed, "removed"),
        (changed, "changed"),
        (added, "added"),
    ]
    assert changes(secrets_repo, "DATABASE_USER")[0][1] == "changed"


def test_each_version_has_the_contract_fields(secrets_repo):
    sops_set(secrets_repo, "dev", "PORT", 9090)
    git(secrets_repo.path, "add", "-A")
    git(
        secrets_repo.path,
        "commit",
        "-q",
        "-m",
        "dev: PORT\n\nbody lines are not the message",
        env={"GIT_AUTHOR_NAME": "Grace Hopper", "GIT_COMMITTER_DATE": "2026-01-02T03:04:05+02:00"},
    )
    newest = key_history(secrets_repo.path / ".git", "HEAD", DEV_FILE, "PORT")[0]
    assert newest.to_json() == {
        "version": git(secrets_repo.path, "rev-parse", "HEAD"),
        "committed_at": "2026-01-02T01:04:05Z",
        "author": "Grace Hopper",
        "message": "dev: PORT",
        "change": "changed",
    }


@pytest.mark.parametrize("subject", ["\x1e:100644 odd\x1f subject", ""])
def test_any_subject_and_author_name_is_read_as_it_is(secrets_repo, subject):
    sops_set(secrets_repo, "dev", "PORT", 7)
    git(secrets_repo.path, "add", "-A")
    git(
        secrets_repo.path,
        "commit",
        "-q",
        "--allow-empty-message",
        "-m",
        subject,
        env={"GIT_AUTHOR_NAME": "Zoë: Ünïcode"},
    )
    newest = key_history(secrets_repo.path / ".git", "HEAD", DEV_FILE, "PORT")
    assert [(c.message, c.author, c.change) for c in newest] == [
        (subject, "Zoë: Ünïcode", "changed"),
        ("secrets: add dev and prod", "Ada Tester", "added"),
    ]


def test_a_nested_key_and_a_type_change_are_changes(secrets_repo):
    sops_set(secrets_repo, "dev", "API_KEYS/openai", "sk-new")
    nested = commit(secrets_repo, "openai")
    sops_set(secrets_repo, "dev", "PORT", "8080")  # the number becomes a string
    typed = commit(secrets_repo, "PORT as a string")
    assert changes(secrets_repo, "API_KEYS/openai")[0] == (nested, "changed")
    assert changes(secrets_repo, "API_KEYS/stripe") == [(secrets_repo.commits[0], "added")]
    assert changes(secrets_repo, "PORT")[0] == (typed, "changed")


def test_a_deleted_and_recreated_file_removes_then_adds_its_keys(secrets_repo):
    git(secrets_repo.path, "rm", "-q", DEV_FILE)
    deleted = commit(secrets_repo, "drop dev")
    secrets_repo.write("dev", {"DATABASE_URL": "again"})
    again = commit(secrets_repo, "dev again")
    assert changes(secrets_repo, "DATABASE_URL")[:2] == [(again, "added"), (deleted, "removed")]
    assert changes(secrets_repo, "PORT")[0] == (deleted, "removed")


def test_a_branch_commit_is_listed_and_its_merge_is_not(secrets_repo):
    git(secrets_repo.path, "checkout", "-q", "-b", "rotate")
    sops_set(secrets_repo, "dev", "DATABASE_URL", "from-the-branch")
    on_branch = commit(secrets_repo, "dev: rotate DATABASE_URL", author="Branch Author")
    git(secrets_repo.path, "checkout", "-q", "main")
    (secrets_repo.path / "README").write_text("main moved on\n")
    commit(secrets_repo, "main: docs")
    git(secrets_repo.path, "merge", "-q", "--no-ff", "-m", "Merge pull request #1", "rotate")
    found = key_history(secrets_repo.path / ".git", "HEAD", DEV_FILE, "DATABASE_URL")
    assert [(c.commit, c.change, c.author) for c in found][0] == (
        on_branch,
        "changed",
        "Branch Author",
    )
    assert all(c.message != "Merge pull request #1" for c in found)


def test_a_merge_that_resolves_a_conflict_with_a_new_value_is_listed(secrets_repo):
    git(secrets_repo.path, "checkout", "-q", "-b", "theirs")
    sops_set(secrets_repo, "dev", "DATABASE_URL", "theirs")
    theirs = commit(secrets_repo, "theirs")
    git(secrets_repo.path, "checkout", "-q", "main")
    sops_set(secrets_repo, "dev", "DATABASE_URL", "ours")
    ours = commit(secrets_repo, "ours")
    subprocess.run(
        ["git", "-C", str(secrets_repo.path), "merge", "-q", "theirs"], capture_output=True
    )
    git(secrets_repo.path, "checkout", "--theirs", DEV_FILE)
    sops_set(secrets_repo, "dev", "DATABASE_URL", "resolved")
    merge = commit(secrets_repo, "Merge theirs, resolved by hand")
    listed = changes(secrets_repo, "DATABASE_URL")
    assert listed[0] == (merge, "changed")
    assert {(ours, "changed"), (theirs, "changed")} <= set(listed)
    assert changes(secrets_repo, "DATABASE_USER") == [(secrets_repo.commits[0], "added")]


def test_history_at_an_older_commit_stops_there(secrets_repo):
    first = secrets_repo.commits[0]
    sops_set(secrets_repo, "dev", "PORT", 1)
    commit(secrets_repo, "later")
    found = key_history(secrets_repo.path / ".git", first, DEV_FILE, "PORT")
    assert [(c.commit, c.change) for c in found] == [(first, "added")]


def test_a_key_or_file_that_never_existed_has_no_history(secrets_repo):
    gd = secrets_repo.path / ".git"
    assert key_history(gd, "HEAD", DEV_FILE, "NEVER") == []
    assert key_history(gd, "HEAD", "secrets/qa.enc.yaml", "PORT") == []
    assert file_log(gd, "HEAD", "secrets/qa.enc.yaml").changes == ()


def test_an_unknown_commit_is_a_history_error(secrets_repo):
    with pytest.raises(HistoryError, match="unknown revision"):
        key_history(secrets_repo.path / ".git", "0" * 40, DEV_FILE, "PORT")
    with pytest.raises(HistoryError, match="unknown revision"):
        key_history(secrets_repo.path / ".git", "no-such-branch", DEV_FILE, "PORT")


def test_history_needs_no_decryption_key(secrets_repo, monkeypatch, tmp_path):
    sops_set(secrets_repo, "dev", "PORT", 1)
    later = commit(secrets_repo, "PORT")
    monkeypatch.delenv("SOPS_AGE_KEY_FILE")
    monkeypatch.setenv("HOME", str(tmp_path / "no-home"))
    monkeypatch.setenv("VANTA_SOPS_BIN", "/nonexistent/sops")
    assert changes(secrets_repo, "PORT")[0] == (later, "changed")


# -- last changes (rotation ages) ---------------------------------------------------------------


def test_last_changes_gives_each_current_key_the_commit_of_its_ciphertext(secrets_repo):
    first = secrets_repo.commits[0]
    sops_set(secrets_repo, "dev", "PORT", 1)
    port = commit(secrets_repo, "PORT")
    sops_set(secrets_repo, "dev", "NEW", "n")
    new = commit(secrets_repo, "NEW")
    sops_unset(secrets_repo, "dev", "DEBUG")
    commit(secrets_repo, "no DEBUG")
    found = last_changes(secrets_repo.path / ".git", "HEAD", DEV_FILE)
    assert {k: c.commit for k, c in found.items()} == {
        "DATABASE_URL": first,
        "DATABASE_USER": first,
        "API_KEYS/openai": first,
        "API_KEYS/stripe": first,
        "PORT": port,
        "NEW": new,
    }
    assert found["NEW"].change == "added" and found["PORT"].change == "changed"
    assert last_changes(secrets_repo.path / ".git", "HEAD", "secrets/qa.enc.yaml") == {}


def test_a_reverted_commit_restores_old_ciphertext_and_counts_as_a_change(secrets_repo):
    sops_set(secrets_repo, "dev", "PORT", 1)
    commit(secrets_repo, "PORT 1")
    git(secrets_repo.path, "revert", "--no-edit", "HEAD")
    revert = git(secrets_repo.path, "rev-parse", "HEAD")
    found = last_changes(secrets_repo.path / ".git", "HEAD", DEV_FILE)
    assert found["PORT"].commit == revert
    assert found["DATABASE_URL"].commit == secrets_repo.commits[0]


# -- caching ---------------------------------------------------------------------------------


def test_a_repeated_question_reads_nothing_from_git_and_a_new_commit_parses_one_blob(
    secrets_repo,
):
    gd = secrets_repo.path / ".git"
    for i in range(5):
        sops_set(secrets_repo, "dev", "PORT", i)
        commit(secrets_repo, f"PORT {i}")
    head = git(secrets_repo.path, "rev-parse", "HEAD")
    first = key_history(gd, head, DEV_FILE, "PORT")
    parsed, logs = history.stats.blobs_parsed, history.stats.logs_read
    assert parsed == 6 and logs == 1  # each blob once, though each is also a parent's
    assert key_history(gd, head, DEV_FILE, "PORT") == first
    assert last_changes(gd, head, DEV_FILE)["PORT"].commit == head
    assert (history.stats.blobs_parsed, history.stats.logs_read) == (parsed, logs)
    sops_set(secrets_repo, "dev", "PORT", 99)
    newer = commit(secrets_repo, "PORT 99")
    assert key_history(gd, newer, DEV_FILE, "PORT")[0].commit == newer
    assert (history.stats.blobs_parsed, history.stats.logs_read) == (parsed + 1, logs + 1)


def test_the_caches_are_bounded_by_entries_and_by_weight():
    lru: LRU[str, int] = LRU(max_entries=3, max_bytes=100)
    for i in range(5):
        lru.put(str(i), i, size=10)
    assert len(lru) == 3 and lru.get("0") is None and lru.get("4") == 4
    lru.get("2")  # recently used: survives
    lru.put("big", 0, size=85)
    assert lru.get("2") == 2 and lru.get("3") is None and lru.get("4") is None
    lru.put("huge", 0, size=1000)  # the newest entry is kept even alone over the bound
    assert len(lru) == 1 and lru.get("huge") == 0


def test_a_repository_reached_by_its_work_tree_path_or_git_dir_gives_the_same_answer(
    tmp_path, age_key
):
    repo = make_secrets_repo(tmp_path / "r", age_key.recipient)
    repo.write("dev", {"A": "1"})
    repo.commit("one")
    via_git_dir = key_history(repo.path / ".git", "HEAD", DEV_FILE, "A")
    history.clear_caches()
    via_str = key_history(str(repo.path / ".git"), "HEAD", DEV_FILE, "A")
    assert via_git_dir == via_str and via_str[0].change == "added"
    assert os.path.isdir(Path(repo.path / ".git"))
