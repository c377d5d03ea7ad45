"""`--env-file` templates (SPEC §14): dotenv files whose values may be
`secretref://ENV/KEY[?version=<commit>]`.

Loading is pure (`load_templates`, `plan_reads`); `read_references` talks to the broker
through a VaultClient: one batch per environment for the plain references, one read for
each `?version=` reference. Every failure names the reference(s) it concerns, never a
value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

from broker.scope import is_environment, is_key
from cli.client import BadRequest, Forbidden, NotFound, Value, VaultClient, VaultError
from cli.importers_dotenv import parse_dotenv
from cli.run_secrets import InjectedVar, yaml_scalar

SCHEME = "secretref://"
VARIABLE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
VERSION_RE = re.compile(r"[0-9a-fA-F]{7,40}")  # a commit SHA as the broker takes it (SPEC §6)


class TemplateError(ValueError):
    """A template that cannot be used (one line: the file and line, or the reference)."""


@dataclass(frozen=True)
class SecretRef:
    """`secretref://ENV/KEY[?version=<commit>]`."""

    environment: str
    key: str
    version: str | None = None

    def __str__(self) -> str:
        query = f"?version={self.version}" if self.version else ""
        return f"{SCHEME}{self.environment}/{self.key}{query}"

    @classmethod
    def parse(cls, text: str) -> SecretRef:
        """Raises TemplateError (naming `text`) unless it is a well-formed reference."""
        body = text.removeprefix(SCHEME)
        path, _, query = body.partition("?")
        environment, _, key = path.partition("/")
        if not is_environment(environment):
            raise TemplateError(f"{text}: {environment!r} is not an environment name")
        if not is_key(key):
            raise TemplateError(f"{text}: {key!r} is not a key name")
        if not query:
            return cls(environment, key)
        try:
            fields = parse_qs(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            fields = {}
        versions = fields.get("version", [])
        if (
            set(fields) != {"version"}
            or len(versions) != 1
            or not VERSION_RE.fullmatch(versions[0])
        ):
            raise TemplateError(
                f"{text}: the only query a reference takes is ?version=<commit SHA, "
                "7 to 40 hex digits>"
            )
        return cls(environment, key, versions[0])


@dataclass(frozen=True)
class TemplateVar:
    """A template's variable: a plain value, or a reference to a secret."""

    name: str
    value: str = field(repr=False)  # the plain value; "" for a reference
    ref: SecretRef | None
    origin: str  # "app.env line 3", for messages


@dataclass(frozen=True)
class Templates:
    variables: tuple[TemplateVar, ...]
    warnings: tuple[str, ...]  # "app.env line 4: no '=', skipped"

    @property
    def refs(self) -> tuple[SecretRef, ...]:
        return tuple(var.ref for var in self.variables if var.ref is not None)


def load_templates(paths: Sequence[Path]) -> Templates:
    """Every variable of every template, in order. Raises TemplateError for a file that
    cannot be read or parsed, a malformed reference, or a name set twice."""
    variables: list[TemplateVar] = []
    warnings: list[str] = []
    seen: dict[str, str] = {}
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise TemplateError(f"{path}: cannot read the template: {reason}") from None
        dotenv = parse_dotenv(text)  # SPEC §13's dotenv, as `vanta-cli import dotenv` reads it
        if dotenv.problems:
            raise TemplateError(f"{path} {dotenv.problems[0]}")
        warnings.extend(f"{path} {warning}" for warning in dotenv.warnings)
        for entry in dotenv.entries:
            origin = f"{path} line {entry.line}"
            if not VARIABLE_NAME_RE.fullmatch(entry.name):
                raise TemplateError(f"{origin}: {entry.name!r} is not a variable name")
            if entry.name in seen:
                raise TemplateError(f"{entry.name} is set twice: {seen[entry.name]} and {origin}")
            seen[entry.name] = origin
            if entry.value.startswith(SCHEME):
                ref = SecretRef.parse(entry.value)
                variables.append(TemplateVar(entry.name, "", ref, origin))
            else:
                variables.append(TemplateVar(entry.name, entry.value, None, origin))
    return Templates(tuple(variables), tuple(warnings))


@dataclass(frozen=True)
class EnvironmentReads:
    """What to read from one environment: a batch of keys, and each versioned reference."""

    environment: str
    keys: tuple[str, ...]  # the unversioned references' keys, read in one batch
    versioned: tuple[SecretRef, ...]  # read one request each
    refs: tuple[SecretRef, ...]  # all references to this environment, for messages

    @property
    def requests(self) -> int:
        """How many counted reads this takes (a reader minted for it needs that many uses)."""
        return (1 if self.keys else 0) + len(self.versioned)

    @property
    def key_pattern(self) -> str:
        """The narrowest single glob covering every key referenced here."""
        return narrowest_glob(ref.key for ref in self.refs)


def narrowest_glob(keys: Iterable[str]) -> str:
    """The key itself for one key, else the keys' longest common prefix followed by `*`."""
    distinct = sorted(set(keys))
    if len(distinct) == 1:
        return distinct[0]
    return os.path.commonprefix(distinct) + "*"


def plan_reads(refs: Iterable[SecretRef]) -> tuple[EnvironmentReads, ...]:
    """The reads the references need, one entry per environment (sorted by name)."""
    by_environment: dict[str, list[SecretRef]] = {}
    for ref in dict.fromkeys(refs):
        by_environment.setdefault(ref.environment, []).append(ref)
    return tuple(
        EnvironmentReads(
            environment=environment,
            keys=tuple(sorted({r.key for r in refs if r.version is None})),
            versioned=tuple(r for r in refs if r.version is not None),
            refs=tuple(refs),
        )
        for environment, refs in sorted(by_environment.items())
    )


class ReferenceFailed(Exception):
    """A reference could not be read; the message names it (and says why)."""

    def __init__(self, refs: Sequence[SecretRef], error: VaultError) -> None:
        super().__init__(f"{', '.join(str(ref) for ref in refs)}: {error}")
        self.refs = tuple(refs)
        self.error = error


REFERENCE_ERRORS = (NotFound, Forbidden, BadRequest)  # about the reference, not the broker


def read_references(reader: VaultClient, reads: EnvironmentReads) -> dict[SecretRef, Value]:
    """The value of every reference to `reads.environment`.

    Raises ReferenceFailed (naming the references concerned) when one is missing, out of
    the reader's scope or malformed for the broker, and VaultError for anything else."""
    values: dict[SecretRef, Value] = {}
    if reads.keys:
        try:
            batch = reader.read_batch(reads.environment, keys=list(reads.keys))
        except REFERENCE_ERRORS as exc:
            raise ReferenceFailed(_unreadable(reader, reads), exc) from None
        for ref in reads.refs:
            if ref.version is None:
                values[ref] = batch.values[ref.key]
    for ref in reads.versioned:
        try:
            values[ref] = reader.get(ref.environment, ref.key, version=ref.version).value
        except REFERENCE_ERRORS as exc:
            raise ReferenceFailed((ref,), exc) from None
    return values


def _unreadable(reader: VaultClient, reads: EnvironmentReads) -> tuple[SecretRef, ...]:
    """After a failed batch: the unversioned references the reader cannot see (listing
    names costs no use), or all of them when it cannot list either."""
    batched = tuple(ref for ref in reads.refs if ref.version is None)
    try:
        visible = set(reader.list_keys(reads.environment).keys)
    except VaultError:
        return batched
    return tuple(ref for ref in batched if ref.key not in visible) or batched


def template_variables(
    variables: Sequence[TemplateVar], values: Mapping[SecretRef, Value]
) -> tuple[InjectedVar, ...]:
    """The templates' variables with their references resolved from `values`; a plain
    line stays plain (configuration: not masked)."""
    injected = []
    for var in variables:
        if var.ref is None:
            injected.append(InjectedVar(var.name, var.value, var.origin, "", secret=False))
        else:
            value = values[var.ref]
            text = isinstance(value, str)
            injected.append(
                InjectedVar(var.name, yaml_scalar(value), str(var.ref), var.ref.key, text=text)
            )
    return tuple(injected)
