"""Rotation policy and evaluation (SPEC §15): pure rules, then real Git history, no key."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.aged import AgedRepo, build_aged_repo, git_date
from support.repos import SOPS_BIN, git

from broker.store.rotation import (
    Policy,
    PolicyError,
    RepositoryError,
    Rule,
    at_least,
    evaluate,
    key_status,
    most_urgent_first,
    parse_policy,
    read_policy_at,
    repository_report,
)

NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class FakeChange:  # the shape broker.store.history gives: a commit and its time
    commit: str
    committed_at: str


def changed(days_ago: float, commit: str = "c" * 40) -> FakeChange:
    moment = NOW - timedelta(days=days_ago)
    return FakeChange(commit, moment.strftime("%Y-%m-%dT%H:%M:%SZ"))


# -- the policy -----------------------------------------------------------------------------


def test_no_policy_file_means_90_and_14_days():
    assert parse_policy(None) == Policy(90, 14, ())
    assert parse_policy("") == Policy(90, 14, ())
    assert parse_policy("other_tool: {a: 1}\n") == Policy(90, 14, ())


def test_policy_rules_parse_with_their_own_or_the_default_warn_days():
    policy = parse_policy(
        """
rotation:
  default_max_age_days: 60
  warn_days: 7
  rules:
    - environment: prod
      key_pattern: "DATABASE_*"
      max_age_days: 30
    - key_pattern: "API_KEYS/*"
      max_age_days: 45
      warn_days: 10
    - environment: "*"
      max_age_days: 365
"""
    )
    assert policy == Policy(
        60,
        7,
        (
            Rule("prod", "DATABASE_*", 30, 7),
            Rule(None, "API_KEYS/*", 45, 10),
            Rule("*", None, 365, 7),
        ),
    )


def test_first_matching_rule_wins_and_unmatched_keys_get_the_defaults():
    policy = Policy(
        90,
        14,
        (
            Rule("prod", "DATABASE_*", 30, 5),
            Rule("prod", None, 60, 10),
            Rule(None, "API_?", 20, 3),
        ),
    )
    assert policy.limits("prod", "DATABASE_URL") == (30, 5)
    assert policy.limits("prod", "API_X") == (60, 10)  # the prod-wide rule comes first
    assert policy.limits("dev", "API_X") == (20, 3)
    assert policy.limits("dev", "API_XY") == (90, 14)  # '?' is one character
    assert policy.limits("dev", "DATABASE_URL") == (90, 14)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("rotation: [1, 2]", "rotation must be a mapping"),
        ("rotation:\n  max_age_days: 30\n", "unknown field 'max_age_days'"),
        ("rotation:\n  default_max_age_days: 0\n", "default_max_age_days"),
        ("rotation:\n  default_max_age_days: true\n", "default_max_age_days"),
        ("rotation:\n  default_max_age_days: '30'\n", "default_max_age_days"),
        ("rotation:\n  warn_days: -1\n", "warn_days"),
        ("rotation:\n  default_max_age_days: 10\n", "warn_days (14) must be less than"),
        ("rotation:\n  rules: {environment: prod}\n", "rules must be a list"),
        ("rotation:\n  rules:\n    - environment: Prod\n", "rules[0].environment"),
        ("rotation:\n  rules:\n    - environment: ../etc\n", "rules[0].environment"),
        ("rotation:\n  rules:\n    - key_pattern: 'DB_[a-z]'\n", "rules[0].key_pattern"),
        ("rotation:\n  rules:\n    - max_age_day: 3\n", "rules[0]: unknown field 'max_age_day'"),
        ("rotation:\n  rules:\n    - max_age_days: 7\n", "rules[0]: warn_days (14)"),
        ("rotation:\n  rules:\n    - 12\n", "rules[0] must be a mapping"),
        ("rotation: {rules: [\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field(text, complaint):
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert complaint in str(caught.value)
    assert str(caught.value).startswith(".vanta.yaml")


# -- one key's status ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days_ago", "age_days", "status"),
    [
        (0, 0, "ok"),
        (15.9, 15, "ok"),
        (16, 16, "due"),  # changed_at + max_age - warn has passed
        (29.99, 29, "due"),
        (30, 30, "overdue"),  # changed_at + max_age has passed
        (400, 400, "overdue"),
        (-1, 0, "ok"),  # a commit dated in the future is not negative days old
    ],
)
def test_status_turns_due_at_max_age_minus_warn_and_overdue_at_max_age(days_ago, age_days, status):
    policy = Policy(30, 14)
    result = key_status(policy, "prod", "DATABASE_URL", changed(days_ago), NOW)
    assert (result.age_days, result.status, result.max_age_days) == (age_days, status, 30)


def test_evaluation_gives_the_contract_fields_with_utc_times():
    change = FakeChange("a" * 40, "2026-06-01T14:00:00+02:00")
    (result,) = evaluate(Policy(), "dev", {"API_KEYS/openai": change}, NOW)
    assert result.to_json() == {
        "environment": "dev",
        "key": "API_KEYS/openai",
        "last_changed": "a" * 40,
        "changed_at": "2026-06-01T12:00:00Z",
        "age_days": 29,
        "max_age_days": 90,
        "status": "ok",
    }


def test_most_urgent_first_orders_overdue_due_ok_then_fewest_days_left():
    policy = Policy(30, 10, (Rule(None, "LONG_*", 300, 10),))
    statuses = evaluate(
        policy,
        "prod",
        {
            "A_OK": changed(1),
            "B_DUE": changed(21),
            "C_DUE_SOONER": changed(25),
            "D_OVERDUE": changed(31),
            "E_OVERDUE_LONGER": changed(90),
            "LONG_OVERDUE": changed(301),
        },
        NOW,
    )
    assert [s.key for s in most_urgent_first(statuses)] == [
        "E_OVERDUE_LONGER",
        "D_OVERDUE",
        "LONG_OVERDUE",
        "C_DUE_SOONER",
        "B_DUE",
        "A_OK",
    ]


def test_fail_on_thresholds():
    assert at_least("overdue", "due") and at_least("due", "due")
    assert not at_least("ok", "due")
    assert at_least("overdue", "overdue") and not at_least("due", "overdue")


# -- real Git history, no decryption key -----------------------------------------------------


@pytest.fixture
def aged_repo(tmp_path: Path, age_key, age_key_file: Path) -> AgedRepo:
    return build_aged_repo(tmp_path / "aged", age_key.recipient, age_key_file)


def statuses_by_name(statuses):
    return {f"{s.environment}/{s.key}": s for s in statuses}


def test_backdated_commits_make_keys_ok_due_and_overdue_without_any_sops_key(
    aged_repo, monkeypatch, tmp_path
):
    monkeypatch.delenv("SOPS_AGE_KEY_FILE", raising=False)
    monkeypatch.delenv("SOPS_AGE_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))  # no ~/.config/sops/age either
    found = statuses_by_name(repository_report(aged_repo.repo.path))
    summary = {name: (s.status, s.age_days, s.max_age_days) for name, s in found.items()}
    assert summary == {
        "prod/DATABASE_URL": ("overdue", 100, 30),
        "prod/API_KEY": ("due", 20, 30),
        "prod/LOG_LEVEL": ("ok", 5, 90),
        "dev/DATABASE_URL": ("ok", 100, 365),
        "dev/API_KEYS/openai": ("ok", 100, 365),
        "staging/API_TOKEN": ("due", 80, 90),
    }
    assert found["prod/DATABASE_URL"].last_changed == aged_repo.first
    assert found["prod/API_KEY"].last_changed == aged_repo.api_key
    assert found["prod/LOG_LEVEL"].last_changed == aged_repo.log_level


def test_a_re_encryption_counts_as_a_change_of_every_key(aged_repo, age_key_file):
    repo = aged_repo.repo
    subprocess.run(
        [SOPS_BIN, "rotate", "--in-place", "secrets/prod.enc.yaml"],
        cwd=repo.path,
        env={**os.environ, "SOPS_AGE_KEY_FILE": str(age_key_file)},
        capture_output=True,
        check=True,
    )
    rotated = repo.commit("prod: sops rotate", date=git_date(1))
    found = statuses_by_name(repository_report(repo.path, "prod"))
    assert {s.last_changed for s in found.values()} == {rotated}
    assert {s.status for s in found.values()} == {"ok"}


def test_one_environment_and_a_missing_one(aged_repo):
    assert {s.environment for s in repository_report(aged_repo.repo.path, "dev")} == {"dev"}
    with pytest.raises(RepositoryError, match="'qa' has no file secrets/qa.enc.yaml"):
        repository_report(aged_repo.repo.path, "qa")


def test_uncommitted_files_are_not_checked_but_the_checked_out_policy_is(aged_repo):
    repo = aged_repo.repo
    repo.write("qa", {"NEW": "uncommitted-secret"})
    (repo.path / ".vanta.yaml").write_text("rotation:\n  default_max_age_days: 3\n  warn_days: 1\n")
    found = statuses_by_name(repository_report(repo.path))
    assert not any(name.startswith("qa/") for name in found)
    assert found["dev/DATABASE_URL"].max_age_days == 3
    assert found["prod/LOG_LEVEL"].status == "overdue"


def test_not_a_repository_or_no_commit(tmp_path):
    with pytest.raises(RepositoryError, match="not inside a Git work tree"):
        repository_report(tmp_path)
    git(tmp_path, "init", "-q")
    with pytest.raises(RepositoryError, match="no commit yet"):
        repository_report(tmp_path)


def test_the_policy_at_a_commit_is_read_from_that_commit(aged_repo):
    repo = aged_repo.repo
    git_dir = str(repo.path / ".git")
    assert read_policy_at(git_dir, aged_repo.first).rules[0] == Rule("prod", "DATABASE_*", 30, 14)
    (repo.path / ".vanta.yaml").unlink()
    without = repo.commit("drop the policy")
    assert read_policy_at(git_dir, without) == Policy()
    (repo.path / ".vanta.yaml").write_text("rotation:\n  warn_days: 500\n")
    broken = repo.commit("a broken policy")
    with pytest.raises(PolicyError, match=f"at {broken[:12]}"):
        read_policy_at(git_dir, broken)
