"""Importing secrets into a checkout: names to keys, conflicts, one commit.

The sources (cli.importers.aws, cli.importers.dotenv) turn what they read into
`Candidate`s; `plan_import` checks them against each other and against the environment's
file, naming every conflict; `apply_plan` writes them with `cli.gitops.checkout.set_value` (the code
`vanta-cli secrets set` runs: `.sops.yaml` rules, other keys' ciphertext untouched) and
makes one commit whose message counts the keys and lists their names, never a value. If
anything fails half-way, the file and its index entry are put back as they were.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from broker.scope import MAX_KEY_LENGTH
from broker.store import history
from cli.client._results import Value
from cli.gitops.checkout import (
    Checkout,
    GitOpsError,
    Outcome,
    check_names,
    has_uncommitted_changes,
    served,
    set_value,
)

_OUTSIDE_SEGMENT = re.compile(r"[^A-Za-z0-9_.-]")


class ImportFailed(Exception):
    """A source could not be read; one line for the user, never holding a value."""


@dataclass(frozen=True)
class Candidate:
    """One value to import: its key, and where it came from (for messages)."""

    key: str
    value: Value = field(repr=False)
    source: str


@dataclass(frozen=True)
class Collected:
    """What a source gave: candidates, warnings (things skipped), and problems (names
    that cannot become keys; they stop the import like conflicts do)."""

    candidates: tuple[Candidate, ...]
    warnings: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """What an import would do to `rel_path`: keys `added` and `replaced` (with
    --overwrite), or the `conflicts` that stop it."""

    environment: str
    rel_path: str
    added: tuple[Candidate, ...]
    replaced: tuple[Candidate, ...]
    conflicts: tuple[str, ...]

    @property
    def writes(self) -> tuple[Candidate, ...]:
        return tuple(sorted(self.added + self.replaced, key=lambda c: c.key))


def clean_segment(text: str) -> str:
    """One key segment: characters outside [A-Za-z0-9_.-] become `_`; a segment of dots
    only (which names no key) becomes underscores."""
    cleaned = _OUTSIDE_SEGMENT.sub("_", text)
    return cleaned if cleaned.strip(".") else "_" * len(cleaned)


def key_from_name(name: str) -> str:
    """A name as a key: `/` separates segments (empty ones dropped), each cleaned."""
    return "/".join(clean_segment(part) for part in name.split("/") if part)


def candidate(key: str, value: Value, source: str) -> Candidate | str:
    """The candidate, or a problem when the key cannot be one."""
    if not key:
        return f"{source}: no key name is left"
    if len(key) > MAX_KEY_LENGTH:
        return f"{source}: the key would be {len(key)} characters long (at most {MAX_KEY_LENGTH})"
    return Candidate(key, value, source)


def collected(items: Iterable[Candidate | str], warnings: Iterable[str] = ()) -> Collected:
    found = list(items)
    return Collected(
        tuple(c for c in found if isinstance(c, Candidate)),
        tuple(warnings),
        tuple(c for c in found if isinstance(c, str)),
    )


# -- planning ------------------------------------------------------------------------------------


def plan_import(
    checkout: Checkout, environment: str, candidates: Sequence[Candidate], overwrite: bool
) -> Plan:
    """Check the candidates against each other and against the environment's file as it
    is in the work tree (what `secrets set` edits). Reads key names only: no key needed."""
    check_names(environment)
    rel = checkout.rel_path(environment)
    with served(rel):
        existing = _existing_keys(checkout.path(environment))
    conflicts = _collisions(candidates)
    added: list[Candidate] = []
    replaced: list[Candidate] = []
    for item in sorted(candidates, key=lambda c: c.key):
        shape = _shape_conflict(item, existing, rel)
        if shape:
            conflicts.append(shape)
        elif item.key not in existing:
            added.append(item)
        elif overwrite:
            replaced.append(item)
        else:
            conflicts.append(
                f"{item.key}: already in {rel} (from {item.source}; --overwrite replaces it)"
            )
    return Plan(environment, rel, tuple(added), tuple(replaced), tuple(dict.fromkeys(conflicts)))


def _existing_keys(path: Path) -> frozenset[str]:
    try:
        return frozenset(history.ciphertext_leaves(path.read_bytes()))
    except FileNotFoundError:
        return frozenset()


def _collisions(candidates: Sequence[Candidate]) -> list[str]:
    """Two names that give one key, and a key that would also be a group of keys."""
    conflicts: list[str] = []
    by_key: dict[str, Candidate] = {}
    for item in candidates:
        first = by_key.setdefault(item.key, item)
        if first is not item:
            conflicts.append(f"{item.key}: both {first.source} and {item.source} become it")
    for key in sorted(by_key):
        for depth in range(1, key.count("/") + 1):
            parent = key.rsplit("/", depth)[0]
            if parent in by_key:
                conflicts.append(
                    f"{parent}: would be a value ({by_key[parent].source}) and a group of "
                    f"keys ({key}, from {by_key[key].source})"
                )
    return conflicts


def _shape_conflict(item: Candidate, existing: frozenset[str], rel: str) -> str | None:
    """A key cannot replace a group of keys, nor go under a value (overwrite or not)."""
    below = sorted(k for k in existing if k.startswith(item.key + "/"))
    if below:
        return f"{item.key}: a group of keys in {rel} ({below[0]}, ...), from {item.source}"
    segments = item.key.split("/")
    for depth in range(1, len(segments)):
        parent = "/".join(segments[:depth])
        if parent in existing:
            return f"{item.key}: {parent} is a value in {rel}, so {item.key} cannot go under it"
    return None


# -- writing -------------------------------------------------------------------------------------


def require_clean(checkout: Checkout, environment: str) -> None:
    """Before committing: someone's uncommitted edit would land under our message."""
    if has_uncommitted_changes(checkout, environment):
        raise GitOpsError(
            f"{checkout.rel_path(environment)} has uncommitted changes: commit or discard "
            "them first (or use --no-commit to add to them)"
        )


def commit_message(environment: str, origin: str, keys: Sequence[str]) -> str:
    """`dev: import 3 keys from AWS Secrets Manager`, then the key names (never values)."""
    count = f"{len(keys)} key" + ("" if len(keys) == 1 else "s")
    return f"{environment}: import {count} from {origin}\n\n" + "\n".join(keys) + "\n"


def apply_plan(checkout: Checkout, plan: Plan, message: str, commit: bool) -> Outcome:
    """Write every key of the plan, then make one commit (or leave it staged). On any
    failure the file and its index entry are restored, and the error raised."""
    if plan.conflicts:
        raise GitOpsError(f"{len(plan.conflicts)} conflict(s): nothing written")
    if commit:
        require_clean(checkout, plan.environment)
    snapshot = _Snapshot.take(checkout, plan.rel_path)
    try:
        for item in plan.writes:
            set_value(checkout, plan.environment, item.key, item.value, commit=False)
        return _commit(checkout, plan.rel_path, message, commit)
    except BaseException:
        snapshot.restore(checkout)
        raise


def _commit(checkout: Checkout, rel: str, message: str, commit: bool) -> Outcome:
    subject = message.splitlines()[0]
    if checkout.git("diff", "--cached", "--quiet", "--", rel, check=False).returncode == 0:
        return Outcome(rel, subject, changed=False)
    if not commit:
        return Outcome(rel, subject, changed=True)
    checkout.git("commit", "-q", "-m", message, "--", rel)
    return Outcome(rel, subject, changed=True, commit=checkout.head())


@dataclass(frozen=True)
class _Snapshot:
    """The environment's file in the work tree and in the index, to put back."""

    rel: str
    data: bytes | None = field(repr=False)
    index_entry: tuple[str, str] | None  # (mode, blob)

    @classmethod
    def take(cls, checkout: Checkout, rel: str) -> _Snapshot:
        path = checkout.top / rel
        data = path.read_bytes() if path.exists() else None
        listed = checkout.git("ls-files", "--stage", "--", rel).stdout.split()
        entry = (listed[0], listed[1]) if len(listed) >= 2 else None
        return cls(rel, data, entry)

    def restore(self, checkout: Checkout) -> None:
        path = checkout.top / self.rel
        if self.data is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(self.data)
        if self.index_entry is None:
            checkout.git("rm", "-q", "--cached", "--ignore-unmatch", "--", self.rel)
        else:
            mode, blob = self.index_entry
            checkout.git("update-index", "--add", "--cacheinfo", f"{mode},{blob},{self.rel}")
