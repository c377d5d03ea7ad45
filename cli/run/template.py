"""`--env-file` templates: dotenv files whose values may be
`secretref://ENV/KEY`, with a query of `version=<commit>`, `optional` or `default=VALUE`
(percent-decoded, may be empty), joined by `&`.

Pure: loading and checking templates and references, and turning the values read
(`cli.run.references`) into the variables the command gets. A reference is required
unless it says `optional` (a key that does not exist leaves the variable unset) or gives
a `default=` (used instead; not a secret, so not masked). Every message names the
reference, never a value: a default's text is shown as `default=…`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from broker.scope import is_environment, is_key
from cli.client import Value
from cli.importers.dotenv import parse_dotenv
from cli.run.injected import InjectedVar, yaml_scalar

SCHEME = "secretref://"
VARIABLE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
VERSION_RE = re.compile(r"[0-9a-fA-F]{7,40}")  # a commit SHA as the broker takes it
PERCENT_ENCODED_RE = re.compile(r"(?:[^%]|%[0-9A-Fa-f]{2})*")
DEFAULT_SHOWN = "default=…"  # a default's text never appears in a message
QUERY_HELP = "a reference takes version=<commit SHA>, optional or default=<value>, joined by &"
# A value that starts like a reference but is not one (`secretref:/dev/X`, `secretref//...`,
# `SecretRef://...`, ` secretref://` in quotes) is an error, never passed on as plain text.
LOOKS_LIKE_REFERENCE_RE = re.compile(r"\s*secret[-_]?ref(?![a-z0-9])", re.IGNORECASE)


class TemplateError(ValueError):
    """A template that cannot be used (one line: the file and line, or the reference)."""


@dataclass(frozen=True)
class SecretRef:
    """`secretref://ENV/KEY[?version=<commit>][&optional | &default=VALUE]`."""

    environment: str
    key: str
    version: str | None = None
    optional: bool = False  # a missing key leaves the variable unset
    default: str | None = field(default=None, repr=False)  # a missing key gives this

    @property
    def required(self) -> bool:
        return not self.optional and self.default is None

    def __str__(self) -> str:
        query = [f"version={self.version}"] if self.version else []
        query += ["optional"] if self.optional else []
        query += [DEFAULT_SHOWN] if self.default is not None else []
        tail = "?" + "&".join(query) if query else ""
        return f"{SCHEME}{self.environment}/{self.key}{tail}"

    @classmethod
    def parse(cls, text: str) -> SecretRef:
        """Raises TemplateError (naming the reference) unless it is a well-formed one."""
        shown = _shown(text)
        body = text.removeprefix(SCHEME)
        path, _, query = body.partition("?")
        environment, _, key = path.partition("/")
        if not is_environment(environment):
            raise TemplateError(f"{shown}: {environment!r} is not an environment name")
        if not is_key(key):
            raise TemplateError(f"{shown}: {key!r} is not a key name")
        if not query:
            return cls(environment, key)
        fields: dict[str, str | None] = {}
        for part in query.split("&"):
            name, has_value, value = part.partition("=")
            if name not in ("version", "optional", "default"):
                raise TemplateError(f"{shown}: unknown query parameter {name!r} ({QUERY_HELP})")
            if name in fields:
                raise TemplateError(f"{shown}: {name} is given twice")
            fields[name] = value if has_value else None
        if "optional" in fields and "default" in fields:
            raise TemplateError(
                f"{shown}: optional and default= do not go together (optional leaves the "
                "variable unset, default= sets it)"
            )
        version = fields.get("version")
        if "version" in fields and (version is None or not VERSION_RE.fullmatch(version)):
            raise TemplateError(f"{shown}: version= takes a commit SHA of 7 to 40 hex digits")
        if fields.get("optional", None) is not None:
            raise TemplateError(f"{shown}: optional takes no value")
        default = None
        if "default" in fields:
            default = _percent_decoded(shown, fields["default"])
        return cls(environment, key, version, "optional" in fields, default)


def _shown(text: str) -> str:
    """The reference as messages show it: a default's text replaced by `…`."""
    return re.sub(r"(?<=[?&])default=[^&]*", DEFAULT_SHOWN, text)


def _percent_decoded(shown: str, raw: str | None) -> str:
    """`default=`'s value, percent-decoded as UTF-8 (`+` is a plus sign); may be empty."""
    if raw is None:
        raise TemplateError(f"{shown}: default needs a value after = (default= for an empty one)")
    if not PERCENT_ENCODED_RE.fullmatch(raw):
        raise TemplateError(
            f"{shown}: default= holds a malformed percent-escape (% must start %XX, "
            "two hex digits; write a % itself as %25)"
        )
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise TemplateError(f"{shown}: default= holds percent-escapes that are not UTF-8") from None


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
        dotenv = parse_dotenv(text)  # the dotenv dialect, as `vanta-cli import dotenv` reads it
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
                try:
                    ref = SecretRef.parse(entry.value)
                except TemplateError as exc:
                    raise TemplateError(f"{origin}: {exc}") from None
                variables.append(TemplateVar(entry.name, "", ref, origin))
            elif LOOKS_LIKE_REFERENCE_RE.match(entry.value):
                raise TemplateError(
                    f"{origin}: {_shown(entry.value)!r} looks like a secret reference but is "
                    f"not one: write {SCHEME}ENV/KEY (lower case, two slashes)"
                )
            else:
                variables.append(TemplateVar(entry.name, entry.value, None, origin))
    return Templates(tuple(variables), tuple(warnings))


def template_variables(
    variables: Sequence[TemplateVar], values: Mapping[SecretRef, Value]
) -> tuple[InjectedVar, ...]:
    """The templates' variables with their references resolved from `values`; a plain
    line stays plain (configuration: not masked), and so does a default (not a secret);
    an optional reference not in `values` is left out."""
    injected = []
    for var in variables:
        ref = var.ref
        if ref is None:
            injected.append(InjectedVar(var.name, var.value, var.origin, "", secret=False))
        elif ref in values:
            value = values[ref]
            text = isinstance(value, str)
            injected.append(InjectedVar(var.name, yaml_scalar(value), str(ref), ref.key, text=text))
        elif ref.default is not None:
            injected.append(InjectedVar(var.name, ref.default, str(ref), ref.key, secret=False))
    return tuple(injected)


def fallbacks(variables: Sequence[TemplateVar], values: Mapping[SecretRef, Value]) -> list[str]:
    """`DB_REPLICA left unset: secretref://dev/DB_REPLICA?optional does not exist`, one line
    for each variable whose reference fell back; names, never values."""
    notes = []
    for var in variables:
        ref = var.ref
        if ref is None or ref in values:
            continue
        assert not ref.required, "a required reference is read or an error"
        what = "left unset" if ref.optional else "gets its default"
        notes.append(f"{var.name} {what}: {ref} does not exist")
    return notes
