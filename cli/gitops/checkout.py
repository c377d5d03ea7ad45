"""GitOps on a checkout of the secrets: set, unset, roll back, list, history.

Every change edits `secrets/<environment>.enc.yaml` with `sops` (which keeps the other
keys' ciphertext, so the diff is the changed lines only) and becomes exactly one commit
whose message names the environment and key, never the value; or, with `commit=False`,
stays staged. History is never rewritten: a rollback is a new commit. Reading (list,
history) compares ciphertext across commits and needs no key.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml.error import YAMLError

from broker.errors import FileRefused
from broker.store import history
from broker.store.files import load_yaml
from broker.store.git import Answer, GitUnavailable
from broker.store.git import run as run_git
from broker.store.history import HistoryError, KeyChange, SkippedVersion
from broker.store.sops import flatten
from cli.client import nested
from cli.gitops.sops import Sops, sops_binary
from cli.names import KnownEnvironments, environment_problem, environments_in, key_problem

SECRETS_DIR = "secrets"
SUFFIX = ".enc.yaml"
VALUE_TYPES = ("string", "number", "bool")
_MESSAGE_KEYS = 8  # keys named in a whole-file rollback's message before "and N more"


class GitOpsError(Exception):
    """A one-line reason the command cannot go on; it never contains a secret value.
    (sops failures arrive as cli.gitops.sops.SopsError, with the same promise.)"""


@dataclass(frozen=True)
class Outcome:
    """What a change did: `commit` is the new commit (None when staged only, or when the
    file already said so and nothing changed)."""

    rel_path: str
    message: str
    changed: bool
    commit: str | None = None


@dataclass(frozen=True)
class Checkout:
    """A Git work tree holding `secrets/`, and the sops that edits it (run at its top)."""

    top: Path
    git_dir: str
    sops: Sops

    def rel_path(self, environment: str) -> str:
        return f"{SECRETS_DIR}/{environment}{SUFFIX}"

    def path(self, environment: str) -> Path:
        return self.top / SECRETS_DIR / f"{environment}{SUFFIX}"

    def git(self, *args: str, check: bool = True) -> Answer:
        try:
            answer = run_git(*args, cwd=self.top)
        except GitUnavailable as exc:
            raise GitOpsError(f"git {args[0]}: {exc}") from None
        if check and not answer.ok:
            raise GitOpsError(f"git {args[0]} failed: {answer.reason}")
        return answer

    def head(self) -> str:
        """The commit HEAD names; GitOpsError in a repository with no commit yet."""
        proc = self.git("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
        if proc.returncode != 0:
            raise GitOpsError(f"{self.top} has no commit yet")
        return proc.stdout.strip()

    def resolve(self, revision: str) -> str:
        """The full SHA of the commit `revision` names; GitOpsError for an unknown one."""
        try:
            return history.resolve_commit(self.git_dir, revision)
        except HistoryError:
            raise GitOpsError(f"unknown revision {revision!r}") from None


def open_checkout(repo: Path, sops_bin: str | None = None) -> Checkout:
    """The Git work tree holding `repo`; GitOpsError when there is none."""
    try:
        proc = run_git("rev-parse", "--show-toplevel", "--absolute-git-dir", cwd=repo)
    except GitUnavailable:
        raise GitOpsError("git could not run") from None
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or len(lines) < 2 or not lines[0]:
        raise GitOpsError(f"not a Git repository (or not its work tree): {repo}")
    top = Path(lines[0])
    return Checkout(top, lines[1], Sops(top, sops_bin or sops_binary()))


@contextmanager
def served(rel: str, where: str = "") -> Iterator[None]:
    """FileRefused (a file the broker does not serve) as a GitOpsError naming it."""
    try:
        yield
    except FileRefused as exc:
        raise GitOpsError(f"{rel}{where}: {exc.reason}; the broker does not serve it") from None


def check_names(environment: str, key: str | None = None) -> None:
    """GitOpsError unless the names are valid, saying the rule in words."""
    problem = environment_problem(environment) or (key_problem(key) if key is not None else None)
    if problem is not None:
        raise GitOpsError(problem)


def typed_value(text: str, value_type: str) -> Any:
    """The value as it will be stored: a string, or a number or boolean when asked for."""
    if value_type == "string":
        return text
    word = text.strip()
    if value_type == "bool":
        lowered = word.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        raise GitOpsError("--type bool takes true or false")
    if value_type == "number":
        try:
            return int(word)
        except ValueError:
            pass
        try:
            number = float(word)
        except ValueError:
            raise GitOpsError("--type number takes an integer or a decimal number") from None
        if not math.isfinite(number):
            raise GitOpsError("--type number takes a finite number")
        return number
    raise GitOpsError(f"unknown value type {value_type!r}")


# -- changes ------------------------------------------------------------------------------------


def set_value(
    checkout: Checkout,
    environment: str,
    key: str,
    value: Any,
    commit: bool,
) -> Outcome:
    """Give `key` the value; a new environment's file is created under `.sops.yaml`."""
    check_names(environment, key)
    rel = checkout.rel_path(environment)
    if commit:
        _require_unchanged(checkout, rel)
    _write_value(checkout, environment, key, value)
    return _finish(checkout, rel, f"{environment}: set {key}", commit)


def new_environment_note(checkout: Checkout, environment: str) -> str | None:
    """What to say when `environment` has no file yet and setting a key starts it (a typo
    would start one too), listing the environments there are; None when it has a file."""
    check_names(environment)
    if checkout.path(environment).exists():
        return None
    rel = checkout.rel_path(environment)
    known = environments_in(checkout.top) or KnownEnvironments(checkout.top, ())
    return (
        f"starting a new environment {environment!r}: {rel} is created under the .sops.yaml "
        f"rule ({known.note_for(environment)})"
    )


def unset_value(checkout: Checkout, environment: str, key: str, commit: bool) -> Outcome:
    """Remove `key` from the environment's file; GitOpsError if it has no such key."""
    check_names(environment, key)
    rel = checkout.rel_path(environment)
    leaves = _work_tree_leaves(checkout, environment)
    if leaves is None:
        raise GitOpsError(f"environment {environment!r} has no file {rel}")
    if key not in leaves:
        raise GitOpsError(f"key {key!r} not found in {rel}")
    if commit:
        _require_unchanged(checkout, rel)
    _remove_key(checkout, rel, key)
    return _finish(checkout, rel, f"{environment}: unset {key}", commit)


def rollback_key(
    checkout: Checkout, environment: str, key: str, revision: str, commit: bool
) -> Outcome:
    """A new change giving `key` the value it had at `revision`, re-encrypted, or removing
    it if it did not exist there. Nothing changes when it already has that ciphertext."""
    check_names(environment, key)
    sha = checkout.resolve(revision)
    rel = checkout.rel_path(environment)
    old_blob = history.file_log(checkout.git_dir, sha, rel).blob
    old = {}
    if old_blob is not None:
        with served(rel, f" at {sha[:12]}"):
            old = history.readable_leaves(checkout.git_dir, old_blob)
    current = _work_tree_leaves(checkout, environment) or {}
    message = f"{environment}: roll back {key} to {sha[:12]}"
    if key not in old and key not in current:
        return Outcome(rel, f"{key} did not exist at {sha[:12]} and does not now", False)
    if key in old and current.get(key) == old[key]:
        return Outcome(rel, f"{key} already has its value of {sha[:12]}", False)
    if commit:
        _require_unchanged(checkout, rel)
    if key not in old:
        _remove_key(checkout, rel, key)
        return _finish(checkout, rel, f"{message} (removed: absent there)", commit)
    assert old_blob is not None
    old_values = flatten(checkout.sops.decrypt(_blob_bytes(checkout, old_blob), rel))
    if key not in old_values:
        raise GitOpsError(f"key {key!r} could not be read from {rel} at {sha[:12]}")
    _write_value(checkout, environment, key, old_values[key])
    return _finish(checkout, rel, message, commit)


def rollback_file(checkout: Checkout, environment: str, revision: str, commit: bool) -> Outcome:
    """A new change giving every key of the environment the value it had at `revision`
    (keys added since are removed; the file is removed if it did not exist there). Keys
    whose value is the same keep their ciphertext; the current recipients are kept."""
    check_names(environment)
    sha = checkout.resolve(revision)
    rel = checkout.rel_path(environment)
    path = checkout.path(environment)
    old_blob = history.file_log(checkout.git_dir, sha, rel).blob
    if commit:
        _require_unchanged(checkout, rel)
    if old_blob is None:
        if not path.exists():
            return Outcome(rel, f"{rel} did not exist at {sha[:12]} and does not now", False)
        checkout.git("rm", "-q", "--", rel)
        return _finish(checkout, rel, f"{environment}: roll back to {sha[:12]} (no file)", commit)
    old_document = checkout.sops.decrypt(_blob_bytes(checkout, old_blob), rel)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(checkout.sops.encrypt_new(rel, old_document))
        return _finish(checkout, rel, f"{environment}: roll back to {sha[:12]}", commit)
    old_values = flatten(old_document)
    current = flatten(checkout.sops.decrypt(path.read_bytes(), rel))
    removed = [k for k in current if k not in old_values]
    restored = [k for k in old_values if k not in current or _differs(current[k], old_values[k])]
    if not removed and not restored:
        return Outcome(rel, f"{rel} already has the values of {sha[:12]}", False)
    for key in removed:
        _remove_key(checkout, rel, key)
    for key in restored:
        checkout.sops.set(rel, key, old_values[key])
    named = sorted(removed + restored)
    listed = ", ".join(named[:_MESSAGE_KEYS])
    if len(named) > _MESSAGE_KEYS:
        listed += f" and {len(named) - _MESSAGE_KEYS} more"
    message = f"{environment}: roll back to {sha[:12]} ({listed})"
    return _finish(checkout, rel, message, commit)


def _differs(a: Any, b: Any) -> bool:
    return type(a) is not type(b) or a != b  # 1 == True in Python; not here


# -- reading ------------------------------------------------------------------------------------


def key_versions(
    checkout: Checkout, environment: str, key: str
) -> tuple[list[KeyChange], list[SkippedVersion]]:
    """Every commit that changed `key` at HEAD, newest first (as the broker answers), and the
    commits whose version of the file was skipped (not served)."""
    check_names(environment, key)
    head = checkout.head()
    rel = checkout.rel_path(environment)
    log = history.file_log(checkout.git_dir, head, rel)
    if not log.changes:
        raise GitOpsError(f"environment {environment!r} has no file {rel} in the history of HEAD")
    with served(rel):
        if log.blob is not None:
            history.readable_leaves(checkout.git_dir, log.blob)
        versions = history.key_history(checkout.git_dir, head, rel, key)
    if not versions:
        raise GitOpsError(f"key {key!r} not found in the history of {rel}")
    return versions, history.skipped_versions(checkout.git_dir, head, rel)


def key_listing(checkout: Checkout, environment: str) -> list[tuple[str, KeyChange | None]]:
    """Each key of the environment at HEAD with the commit that last changed it."""
    check_names(environment)
    head = checkout.head()
    rel = checkout.rel_path(environment)
    with served(rel):
        keys = history.current_keys(checkout.git_dir, head, rel)
    if keys is None:
        raise GitOpsError(f"environment {environment!r} has no file {rel} at HEAD")
    changes = history.last_changes(checkout.git_dir, head, rel)
    return [(key, changes.get(key)) for key in keys]


def has_uncommitted_changes(checkout: Checkout, environment: str) -> bool:
    rel = checkout.rel_path(environment)
    return bool(checkout.git("status", "--porcelain", "--", rel).stdout.strip())


# -- steps --------------------------------------------------------------------------------------


def _work_tree_leaves(checkout: Checkout, environment: str) -> dict[str, Any] | None:
    try:
        data = checkout.path(environment).read_bytes()
    except FileNotFoundError:
        return None
    with served(checkout.rel_path(environment)):
        return history.ciphertext_leaves(data)


def _blob_bytes(checkout: Checkout, blob: str) -> bytes:
    try:
        answer = run_git("cat-file", "blob", blob, git_dir=checkout.git_dir, binary=True)
    except GitUnavailable:
        answer = None
    if answer is None or not answer.ok:
        raise GitOpsError(f"blob {blob[:12]} cannot be read")
    return answer.stdout


def _require_unchanged(checkout: Checkout, rel: str) -> None:
    # Committing on top of someone's uncommitted edit would put it under our message.
    if checkout.git("status", "--porcelain", "--", rel).stdout.strip():
        raise GitOpsError(
            f"{rel} has uncommitted changes: commit or discard them first "
            "(or use --no-commit to add to them)"
        )


def _write_value(checkout: Checkout, environment: str, key: str, value: Any) -> None:
    rel = checkout.rel_path(environment)
    leaves = _work_tree_leaves(checkout, environment)
    if leaves is None:
        path = checkout.path(environment)
        data = checkout.sops.encrypt_new(rel, nested({key: value}))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return
    _check_shape(leaves, key, rel)
    checkout.sops.set(rel, key, value)


def _check_shape(leaves: dict[str, Any], key: str, rel: str) -> None:
    """A key is a leaf: it cannot also be a group of keys, nor sit under a value."""
    below = sorted(k for k in leaves if k.startswith(key + "/"))
    if below:
        raise GitOpsError(f"{key!r} is a group of keys in {rel} ({below[0]!r}, ...), not a value")
    segments = key.split("/")
    for depth in range(1, len(segments)):
        parent = "/".join(segments[:depth])
        if parent in leaves:
            raise GitOpsError(f"{parent!r} is a value in {rel}: {key!r} cannot go under it")


def _remove_key(checkout: Checkout, rel: str, key: str) -> None:
    """sops unset the key, then any mapping above it left empty (no `group: {}` lines)."""
    checkout.sops.unset(rel, key)
    segments = key.split("/")
    for depth in range(len(segments) - 1, 0, -1):
        if not _is_empty_mapping(checkout.top / rel, segments[:depth]):
            break
        checkout.sops.unset(rel, "/".join(segments[:depth]))


def _is_empty_mapping(path: Path, segments: list[str]) -> bool:
    try:
        node: Any = load_yaml(path.read_bytes())
    except (OSError, YAMLError):
        return False
    for segment in segments:
        if not isinstance(node, dict) or segment not in node:
            return False
        node = node[segment]
    return node == {}


def _finish(checkout: Checkout, rel: str, message: str, commit: bool) -> Outcome:
    """Stage the file; commit it alone with `message` unless asked not to."""
    if (checkout.top / rel).exists():
        checkout.git("add", "--", rel)
    else:
        checkout.git("rm", "-q", "--cached", "--ignore-unmatch", "--", rel)
    staged = checkout.git("diff", "--cached", "--quiet", "--", rel, check=False)
    if staged.returncode == 0:
        return Outcome(rel, message, changed=False)
    if not commit:
        return Outcome(rel, message, changed=True)
    proc = checkout.git("commit", "-q", "-m", message, "--", rel, check=False)
    if proc.returncode != 0:
        raise GitOpsError(f"git commit failed ({proc.reason}); the change to {rel} is staged")
    return Outcome(rel, message, changed=True, commit=checkout.head())
