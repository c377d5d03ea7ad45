"""What run-with-secrets injects: fetching the values, naming them, writing them as text.

Pure except for `fetch_batch` (which talks to the broker through VaultClient).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from cli.client import Batch, TokenRequest, Value, VaultClient

READER_PERMISSIONS = ("secrets:read", "secrets:list")
READER_TTL_MINUTES = 5
READER_USAGE_LIMIT = 1  # exactly one counted read: the batch

_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_]")


class NameClash(ValueError):
    """Two keys would become the same variable name."""


@dataclass(frozen=True)
class InjectedVar:
    """One variable the child gets: its name, its text, and the secret it came from."""

    name: str
    value: str = field(repr=False)
    source: str  # "<environment>/<key>", for messages (never the value)
    key: str


def reader_request(environment: str, key_pattern: str, subject: str) -> TokenRequest:
    """The token run-with-secrets mints for itself: read and list, one use, five minutes."""
    return TokenRequest(
        subject=subject,
        environment=environment,
        key_pattern=key_pattern,
        ttl_minutes=READER_TTL_MINUTES,
        usage_limit=READER_USAGE_LIMIT,
        permissions=READER_PERMISSIONS,
    )


def fetch_batch(reader: VaultClient, environment: str, key_pattern: str) -> Batch:
    """Every key matching `key_pattern` (and the token's pattern), in one request."""
    return reader.read_batch(environment, pattern=key_pattern)


def env_name(key: str) -> str:
    """`API_KEYS/openai` -> `API_KEYS_OPENAI`: upper-cased, anything outside [A-Za-z0-9_] -> _."""
    return _NOT_IN_NAME.sub("_", key.upper())


def yaml_scalar(value: Value) -> str:
    """A value as YAML writes it: strings as they are, 42, 1.5, true, false, .inf."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    return str(value)


def variables_for(environment: str, values: Mapping[str, Value]) -> tuple[InjectedVar, ...]:
    """One variable per key, in key order; raise NameClash if two keys share a name."""
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
        variables.append(InjectedVar(name, yaml_scalar(values[key]), source, key))
    return tuple(variables)


def describe(variables: tuple[InjectedVar, ...]) -> str:
    """`DATABASE_URL, API_KEYS_OPENAI (API_KEYS/openai)`: names only, never values."""
    return ", ".join(v.name if v.name == v.key else f"{v.name} ({v.key})" for v in variables)
