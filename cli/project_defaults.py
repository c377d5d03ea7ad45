"""Per-directory defaults in `.vanta.yaml`, like `doppler setup`: a project names its
environment (and key pattern) once, and its scripts say `vanta-cli run -- npm start`.

    defaults:
      environment: dev        # run-with-secrets and get
      key_pattern: "*"        # run-with-secrets

The nearest `.vanta.yaml` from the current directory upwards is used (the same file may
hold the repository's `rotation:` policy; each reader ignores the other's section). A
file owned by another user (not root) is ignored with a warning: whoever can write a
`.vanta.yaml` above your directory would otherwise choose what your commands read.
Options given on the command line always win.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import click
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from cli.names import environment_problem, pattern_problem

FILE_NAME = ".vanta.yaml"
SECTION = "defaults"
FIELDS = ("environment", "key_pattern")


class DefaultsError(Exception):
    """`.vanta.yaml` cannot be used (one line naming the file and the field)."""


@dataclass(frozen=True)
class Defaults:
    """What `.vanta.yaml` says; `source` is None when no file gave anything."""

    environment: str | None = None
    key_pattern: str | None = None
    source: Path | None = None


def find_file(start: Path | None = None) -> Path | None:
    """The nearest `.vanta.yaml` at `start` (default: the current directory) or above."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def load_defaults(start: Path | None = None) -> Defaults:
    """The defaults of the nearest `.vanta.yaml` (none without one). Raises DefaultsError
    for a file that cannot be read or holds a bad `defaults:` section."""
    path = find_file(start)
    if path is None:
        return Defaults()
    owner = path.stat().st_uid
    if owner not in (os.getuid(), 0):
        click.echo(f"vanta: warning: ignoring {path}: it belongs to another user", err=True)
        return Defaults()
    try:
        document = YAML(typ="safe").load(path.read_bytes())
    except OSError as exc:
        raise DefaultsError(f"{path}: cannot read it: {exc.strerror}") from None
    except YAMLError:
        raise DefaultsError(f"{path}: not valid YAML") from None
    if not isinstance(document, dict) or document.get(SECTION) is None:
        return Defaults()
    section = document[SECTION]
    if not isinstance(section, dict):
        raise DefaultsError(f"{path}: {SECTION} must be a mapping")
    unknown = sorted(str(name) for name in section if name not in FIELDS)
    if unknown:
        raise DefaultsError(
            f"{path}: {SECTION}: unknown field {unknown[0][:64]!r} (known: {', '.join(FIELDS)})"
        )
    values: dict[str, str] = {}
    for name in FIELDS:
        value = section.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise DefaultsError(f"{path}: {SECTION}.{name} must be a string")
        check = environment_problem if name == "environment" else pattern_problem
        problem = check(value)
        if problem is not None:
            raise DefaultsError(f"{path}: {SECTION}.{name}: {problem}")
        values[name] = value
    if not values:
        return Defaults()
    return Defaults(values.get("environment"), values.get("key_pattern"), path)
