"""Rotation reminders: the policy in `.vanta.yaml` and each key's status.

Pure functions over plain data: the policy text comes from a file or a commit, and each
key's last change from `broker.store.history`, which compares ciphertext across commits, so
nothing here needs (or touches) a decryption key. The CLI, the API and the dashboard all
evaluate through `evaluate()`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from ruamel.yaml.error import YAMLError

from broker.errors import FileRefused
from broker.scope import ALL, is_environment, is_pattern, pattern_matches
from broker.store.files import MISNAMED, SUFFIX, YAMLRefused, environment_of, load_yaml
from broker.store.git import Answer, GitUnavailable
from broker.store.git import run as run_git

POLICY_FILE = ".vanta.yaml"
MAX_POLICY_BYTES = 1024 * 1024
SECRETS_DIR = "secrets"
SECRETS_SUFFIX = SUFFIX
DEFAULT_MAX_AGE_DAYS = 90
DEFAULT_WARN_DAYS = 14
STATUSES = ("ok", "due", "overdue")  # least to most urgent
_DAY_SECONDS = 86400
_MAX_DAYS = 100 * 366  # a century: beyond it a number is a typo, not a policy
_RULE_FIELDS = frozenset({"environment", "key_pattern", "max_age_days", "warn_days"})
_POLICY_FIELDS = frozenset({"default_max_age_days", "warn_days", "rules"})


class PolicyError(ValueError):
    """`.vanta.yaml` cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Rule:
    """One `rotation.rules` entry: None for environment or key_pattern matches everything."""

    environment: str | None
    key_pattern: str | None
    max_age_days: int
    warn_days: int

    def applies(self, environment: str, key: str) -> bool:
        if self.environment not in (None, ALL, environment):
            return False
        return self.key_pattern is None or pattern_matches(self.key_pattern, key)


@dataclass(frozen=True)
class Policy:
    default_max_age_days: int = DEFAULT_MAX_AGE_DAYS
    warn_days: int = DEFAULT_WARN_DAYS
    rules: tuple[Rule, ...] = ()

    def limits(self, environment: str, key: str) -> tuple[int, int]:
        """(max_age_days, warn_days) for a key: the first matching rule, else the defaults."""
        for rule in self.rules:
            if rule.applies(environment, key):
                return rule.max_age_days, rule.warn_days
        return self.default_max_age_days, self.warn_days


class Change(Protocol):
    """What evaluation needs of a key's last change (broker.store.history's KeyChange has it)."""

    @property
    def commit(self) -> str: ...

    @property
    def committed_at(self) -> str:
        """RFC 3339 UTC."""


@dataclass(frozen=True)
class KeyStatus:
    environment: str
    key: str
    last_changed: str
    changed_at: str
    age_days: int
    max_age_days: int
    warn_days: int
    status: str

    @property
    def days_left(self) -> int:
        """Whole days until overdue (negative once overdue)."""
        return self.max_age_days - self.age_days

    def to_json(self) -> dict[str, Any]:
        """The contract's object: warn_days stays internal."""
        return {
            "environment": self.environment,
            "key": self.key,
            "last_changed": self.last_changed,
            "changed_at": self.changed_at,
            "age_days": self.age_days,
            "max_age_days": self.max_age_days,
            "status": self.status,
        }


# -- the policy -------------------------------------------------------------------------------


def parse_policy(text: str | bytes | None, source: str = POLICY_FILE) -> Policy:
    """The rotation policy in a `.vanta.yaml` document (None: no file, the defaults).

    Raises PolicyError naming `source` and the offending field. Unknown fields are errors,
    so a misspelt `max_age_day` cannot silently fall back to the default."""
    if text is None:
        return Policy()
    if len(text) > MAX_POLICY_BYTES:
        raise PolicyError(f"{source}: over 1 MiB")
    try:
        document = load_yaml(text)
    except YAMLRefused:
        raise PolicyError(f"{source}: YAML anchors and aliases are not allowed") from None
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise PolicyError(f"{source}: not valid YAML{where}") from None
    if document is None:
        return Policy()
    if not isinstance(document, dict):
        raise PolicyError(f"{source}: the document must be a mapping")
    section = document.get("rotation")
    if section is None:
        return Policy()
    if not isinstance(section, dict):
        raise PolicyError(f"{source}: rotation must be a mapping")
    _no_unknown(section, _POLICY_FIELDS, f"{source}: rotation")
    max_age = _days(section, "default_max_age_days", DEFAULT_MAX_AGE_DAYS, source, minimum=1)
    warn = _days(section, "warn_days", DEFAULT_WARN_DAYS, source, minimum=0)
    _check_window(max_age, warn, f"{source}: rotation")
    raw_rules = section.get("rules") or []
    if not isinstance(raw_rules, list):
        raise PolicyError(f"{source}: rotation.rules must be a list")
    rules = tuple(_rule(raw, i, max_age, warn, source) for i, raw in enumerate(raw_rules))
    return Policy(max_age, warn, rules)


def _rule(raw: object, index: int, max_age: int, warn: int, source: str) -> Rule:
    where = f"{source}: rotation.rules[{index}]"
    if not isinstance(raw, dict):
        raise PolicyError(f"{where} must be a mapping")
    _no_unknown(raw, _RULE_FIELDS, where)
    environment = raw.get("environment")
    if environment is not None and environment != ALL and not is_environment(environment):
        raise PolicyError(f"{where}.environment must be an environment name or '*'")
    pattern = raw.get("key_pattern")
    if pattern is not None and not is_pattern(pattern):
        raise PolicyError(f"{where}.key_pattern must be a key glob ('*' and '?' only)")
    rule_max = _days(raw, "max_age_days", max_age, where, minimum=1)
    rule_warn = _days(raw, "warn_days", warn, where, minimum=0)
    _check_window(rule_max, rule_warn, where)
    return Rule(environment, pattern, rule_max, rule_warn)


def _no_unknown(mapping: dict, allowed: frozenset[str], where: str) -> None:
    unknown = sorted(str(k) for k in mapping if k not in allowed)
    if unknown:
        raise PolicyError(f"{where}: unknown field {unknown[0][:64]!r}")


def _days(mapping: dict, name: str, default: int, where: str, minimum: int) -> int:
    value = mapping.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= _MAX_DAYS:
        raise PolicyError(f"{where}.{name} must be a whole number of days from {minimum}")
    return value


def _check_window(max_age: int, warn: int, where: str) -> None:
    # warn_days >= max_age_days would make a key due the moment it changes.
    if warn >= max_age:
        raise PolicyError(
            f"{where}: warn_days ({warn}) must be less than max_age_days ({max_age}); "
            "set warn_days on the rule"
        )


def read_policy_file(repo_root: Path) -> Policy:
    """The policy in `<repo_root>/.vanta.yaml` as checked out (defaults without one)."""
    path = repo_root / POLICY_FILE
    try:
        with path.open("rb") as f:
            text = f.read(MAX_POLICY_BYTES + 1)
    except FileNotFoundError:
        return Policy()
    except OSError as exc:
        raise PolicyError(f"{POLICY_FILE}: cannot be read ({exc.strerror})") from None
    return parse_policy(text)


@lru_cache(maxsize=64)
def read_policy_at(git_dir: str, commit: str) -> Policy:
    """The policy in `.vanta.yaml` at the root of `commit` (a full SHA, so cacheable)."""
    source = f"{POLICY_FILE} at {commit[:12]}"
    try:
        size = run_git("cat-file", "-s", f"{commit}:{POLICY_FILE}", git_dir=git_dir)
        if not size.ok:
            return Policy()
        if not size.stdout.strip().isdigit() or int(size.stdout) > MAX_POLICY_BYTES:
            raise PolicyError(f"{source}: over 1 MiB")  # not read: it could be any size
        blob = run_git("cat-file", "blob", f"{commit}:{POLICY_FILE}", git_dir=git_dir, binary=True)
    except GitUnavailable:
        blob = None
    if blob is None or not blob.ok:
        raise PolicyError(f"{POLICY_FILE}: cannot be read at {commit[:12]}")
    return parse_policy(blob.stdout, source)


# -- evaluation -----------------------------------------------------------------------------------


def parse_time(value: str) -> datetime:
    """An RFC 3339 timestamp as an aware UTC datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def key_status(
    policy: Policy, environment: str, key: str, change: Change, now: datetime
) -> KeyStatus:
    """One key's status: `due` once changed_at + max_age - warn has passed, `overdue`
    once changed_at + max_age has; age_days is whole days since the change, rounded down."""
    max_age, warn = policy.limits(environment, key)
    changed = parse_time(change.committed_at)
    age_days = max(0, math.floor((now - changed).total_seconds() / _DAY_SECONDS))
    if age_days >= max_age:
        status = "overdue"
    elif age_days >= max_age - warn:
        status = "due"
    else:
        status = "ok"
    return KeyStatus(
        environment=environment,
        key=key,
        last_changed=change.commit,
        changed_at=changed.strftime("%Y-%m-%dT%H:%M:%SZ"),
        age_days=age_days,
        max_age_days=max_age,
        warn_days=warn,
        status=status,
    )


def evaluate(
    policy: Policy,
    environment: str,
    changes: Mapping[str, Change],
    now: datetime | None = None,
) -> list[KeyStatus]:
    """The status of every key in `changes` (key -> its last change), in key order."""
    moment = now or datetime.now(UTC)
    return [key_status(policy, environment, key, changes[key], moment) for key in sorted(changes)]


def most_urgent_first(statuses: Iterable[KeyStatus]) -> list[KeyStatus]:
    """Overdue, then due, then ok; within each, the fewest days left first."""
    return sorted(
        statuses,
        key=lambda s: (-STATUSES.index(s.status), s.days_left, s.environment, s.key),
    )


class RepositoryError(ValueError):
    """A checkout that cannot be checked: not Git, no commit, or no such environment."""


@dataclass(frozen=True)
class SkippedFile:
    """A file in `secrets/` the check left out, and why (the broker does not serve
    it either)."""

    path: str
    reason: str


@dataclass(frozen=True)
class RepositoryReport:
    statuses: list[KeyStatus]
    skipped: list[SkippedFile]


def repository_report(
    repo: Path, environment: str | None = None, now: datetime | None = None
) -> list[KeyStatus]:
    """The statuses of `repository_check` (the files it skips are left out silently)."""
    return repository_check(repo, environment, now).statuses


def repository_check(
    repo: Path, environment: str | None = None, now: datetime | None = None
) -> RepositoryReport:
    """Every key of every environment (or of `environment`) in `secrets/` at HEAD of the
    repository holding `repo`, against the checked-out `.vanta.yaml`, and the files skipped
    because the broker does not serve them. Ciphertext only: no decryption key is
    needed. Raises RepositoryError (also for an `environment` whose file is not served),
    PolicyError."""
    from broker.store import history

    top, git_dir, head = _repository(repo)
    policy = read_policy_file(top)
    files, skipped = _environment_files(git_dir, head)
    if environment is not None:
        if environment not in files:
            raise RepositoryError(
                f"environment {environment!r} has no file {SECRETS_DIR}/{environment}.enc.yaml "
                "at HEAD"
            )
        files, skipped = {environment: files[environment]}, []
    moment = now or datetime.now(UTC)
    statuses: list[KeyStatus] = []
    for name, path in sorted(files.items()):
        try:
            changes = history.last_changes(Path(git_dir), head, path)
        except FileRefused as exc:
            if environment is not None:
                raise RepositoryError(f"{path} is not served: {exc.reason}") from None
            skipped.append(SkippedFile(path, exc.reason))
            continue
        statuses.extend(evaluate(policy, name, changes, moment))
    return RepositoryReport(statuses, sorted(skipped, key=lambda f: f.path))


def _git(cwd: Path | None, *args: str) -> Answer:
    try:
        return run_git(*args, cwd=cwd, timeout=60)
    except GitUnavailable as exc:
        raise RepositoryError(str(exc)) from None


def _repository(repo: Path) -> tuple[Path, str, str]:
    """(work tree top, git dir, HEAD commit) of the repository holding `repo`."""
    found = _git(repo, "rev-parse", "--show-toplevel", "--absolute-git-dir")
    if found.returncode != 0:
        raise RepositoryError(f"{repo} is not inside a Git work tree")
    top, git_dir = found.stdout.splitlines()[:2]
    head = _git(None, "--git-dir", git_dir, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if head.returncode != 0:
        raise RepositoryError(f"{top} has no commit yet")
    # A shallow clone (CI's default) would date every key to its oldest fetched commit.
    shallow = _git(None, "--git-dir", git_dir, "rev-parse", "--is-shallow-repository")
    if shallow.stdout.strip() == "true":
        raise RepositoryError(
            f"{top} is a shallow clone, so key ages cannot be known: fetch the whole "
            "history (git fetch --unshallow; actions/checkout with fetch-depth: 0)"
        )
    return Path(top), git_dir, head.stdout.strip()


def _environment_files(git_dir: str, commit: str) -> tuple[dict[str, str], list[SkippedFile]]:
    """Environment name -> path of its file in `commit` (`secrets/<env>.enc.yaml`), and the
    other `*.enc.yaml` files there, skipped for their names."""
    listed = _git(None, "--git-dir", git_dir, "ls-tree", "-z", commit, f"{SECRETS_DIR}/")
    files, skipped = {}, []
    for entry in listed.stdout.split("\0"):
        meta, _, path = entry.partition("\t")
        if meta.split(" ")[1:2] != ["blob"]:
            continue  # a subdirectory (or a submodule) holds no environment
        environment = environment_of(path[len(SECRETS_DIR) + 1 :])
        if environment is not None:
            files[environment] = path
        elif path.endswith(SECRETS_SUFFIX):
            skipped.append(SkippedFile(path, MISNAMED))
    return files, skipped


def at_least(status: str, threshold: str) -> bool:
    """True when `status` is `threshold` or more urgent (`due` also catches `overdue`)."""
    return STATUSES.index(status) >= STATUSES.index(threshold)


def count_by_status(statuses: Iterable[KeyStatus]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for status in statuses:
        counts[status.status] += 1
    return counts
