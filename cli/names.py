"""Names as people type them: checks that say the rule in words, and the environments a
checkout has (to answer `--environment dve` with the ones that exist).

The rules themselves are the broker's (`broker.scope`); only the wording is the CLI's.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import click

from broker.scope import ALL, MAX_KEY_LENGTH, is_environment, is_key, is_pattern
from broker.store.git import GitUnavailable
from broker.store.git import run as run_git

ENVIRONMENT_RULE = (
    "lower-case letters, digits, '-' and '_', starting with a letter or digit, at most 63 "
    "characters, not 'tokens'"
)
KEY_RULE = (
    f"'/'-separated segments of letters, digits, '_', '.' and '-', at most {MAX_KEY_LENGTH} "
    "characters"
)
PATTERN_RULE = (
    f"a key glob: letters, digits, '_', '.', '-', '/', with '*' for any run and '?' for one "
    f"character, at most {MAX_KEY_LENGTH} characters"
)
SECRETS_DIR = "secrets"
SUFFIX = ".enc.yaml"


def environment_problem(name: str, allow_all: bool = False) -> str | None:
    """Why `name` is not an environment name (None if it is)."""
    if (allow_all and name == ALL) or is_environment(name):
        return None
    every = " (or '*' for every one)" if allow_all else ""
    return f"{name!r} is not an environment name: {ENVIRONMENT_RULE}{every}"


def key_problem(key: str) -> str | None:
    return None if is_key(key) else f"{key!r} is not a key: {KEY_RULE}"


def pattern_problem(pattern: str) -> str | None:
    return None if is_pattern(pattern) else f"{pattern!r} is not a key pattern: {PATTERN_RULE}"


def check_option(problem: str | None, flag: str) -> None:
    """A usage error (exit 2) naming `flag` as the user typed it, when there is a problem."""
    if problem is not None:
        raise click.BadParameter(problem, param_hint=f"'{flag}'")


@dataclass(frozen=True)
class KnownEnvironments:
    """The environments a checkout has: `secrets/<env>.enc.yaml` in its work tree."""

    where: Path  # the checkout's top
    names: tuple[str, ...]

    def note_for(self, name: str) -> str:
        """`the environments in /repo are dev, prod, staging (did you mean dev?)`."""
        if not self.names:
            return f"{self.where} has no environment yet"
        listed = ", ".join(self.names)
        close = difflib.get_close_matches(name, self.names, n=1, cutoff=0.6)
        guess = f" (did you mean {close[0]}?)" if close else ""
        return f"the environments in {self.where} are {listed}{guess}"


def checkout_environments(start: Path | None = None) -> KnownEnvironments | None:
    """The environments of the Git checkout holding `start` (default: the current
    directory), or None outside one or when it has no secrets/ directory."""
    try:
        proc = run_git("rev-parse", "--show-toplevel", cwd=start or Path.cwd(), timeout=30)
    except GitUnavailable:
        return None
    if not proc.ok or not proc.stdout.strip():
        return None
    top = Path(proc.stdout.strip())
    return environments_in(top)


def environments_in(top: Path) -> KnownEnvironments | None:
    directory = top / SECRETS_DIR
    if not directory.is_dir():
        return None
    names = sorted(
        path.name.removesuffix(SUFFIX)
        for path in directory.glob(f"*{SUFFIX}")
        if is_environment(path.name.removesuffix(SUFFIX))
    )
    return KnownEnvironments(top, tuple(names))


def unknown_environment_note(name: str, known: KnownEnvironments | None) -> str | None:
    """What to tell someone who named `name`, which the checkout does not have (None when
    it does, or when no checkout is known)."""
    if known is None or name in known.names or name == ALL:
        return None
    return known.note_for(name)
