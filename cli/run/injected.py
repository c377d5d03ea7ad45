"""What run-with-secrets injects: the reader token it asks for, the variables it names
after keys, the text it writes. Pure: fetching is `cli.run.fetch`'s."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from cli.client import TokenRequest, Value
from cli.client._results import yaml_scalar
from cli.run.variables import allow_hint, env_name, refused_keys

READER_PERMISSIONS = ("secrets:read", "secrets:list")
READER_TTL_MINUTES = 5
READER_USAGE_LIMIT = 1  # exactly one counted read: the batch


class NameClash(ValueError):
    """Two keys would become the same variable name."""


class RefusedVariable(ValueError):
    """A key would set a variable that changes how a program starts."""


@dataclass(frozen=True)
class InjectedVar:
    """One variable the child gets: its name, its text, and the secret it came from."""

    name: str
    value: str = field(repr=False)
    source: str  # "<environment>/<key>", a secretref, or "<template> line <n>" (never the value)
    key: str  # the secret's key; "" for a template's plain line
    secret: bool = True  # False for a template's plain line: configuration, not a secret
    text: bool = True  # False for numbers and booleans (as YAML writes them; not masked)


def reader_request(
    environment: str, key_pattern: str, subject: str, usage_limit: int = READER_USAGE_LIMIT
) -> TokenRequest:
    """The token run-with-secrets mints for itself: read and list, five minutes, as many
    uses as the requests it will make (one, for a pattern batch)."""
    return TokenRequest(
        subject=subject,
        environment=environment,
        key_pattern=key_pattern,
        ttl_minutes=READER_TTL_MINUTES,
        usage_limit=usage_limit,
        permissions=READER_PERMISSIONS,
    )


def variables_for(
    environment: str, values: Mapping[str, Value], allowed: Collection[str] = ()
) -> tuple[InjectedVar, ...]:
    """One variable per key, in key order. Raises RefusedVariable if a key would set a
    variable that changes how a program starts (unless named in `allowed`), NameClash if
    two keys share a name."""
    refused = refused_keys(sorted(values), allowed)
    if refused:
        them = "it" if len(refused) == 1 else "them"
        raise RefusedVariable(
            ", ".join(f"key {r.key!r} would set {r.name}" for r in refused)
            + ": run-with-secrets does not set a variable that changes how a program starts "
            f"from a key name; narrow --key-pattern, or allow {them} with {allow_hint(refused)}"
        )
    taken: dict[str, str] = {}
    variables = []
    for key in sorted(values):
        name = env_name(key)
        if name in taken:
            raise NameClash(
                f"keys {taken[name]!r} and {key!r} both become {name}: "
                "narrow --key-pattern so only one of them is injected"
            )
        taken[name] = key
        source = f"{environment}/{key}"
        value = values[key]
        text = isinstance(value, str)
        variables.append(InjectedVar(name, yaml_scalar(value), source, key, text=text))
    return tuple(variables)


def combine(*groups: Sequence[InjectedVar]) -> tuple[InjectedVar, ...]:
    """All the variables, in order; raise NameClash if a name is set twice."""
    first: dict[str, InjectedVar] = {}
    for var in (var for group in groups for var in group):
        if var.name in first:
            raise NameClash(
                f"{var.name} is set twice: by {first[var.name].source} and by {var.source}"
            )
        first[var.name] = var
    return tuple(first.values())


def describe(variables: Sequence[InjectedVar]) -> str:
    """`DATABASE_URL, API_KEYS_OPENAI (API_KEYS/openai)`: names only, never values."""
    return ", ".join(v.name if v.name == v.key else f"{v.name} ({v.key})" for v in variables)


def describe_sources(variables: Sequence[InjectedVar]) -> str:
    """`DB (secretref://dev/DATABASE_URL), LOG_LEVEL (app.env line 3)`: never values."""
    return ", ".join(f"{v.name} ({v.source})" for v in variables)
