"""The typed results `cli.client.VaultClient` returns (values and tokens never in a repr)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# A secret's value keeps its YAML type: "text", 42, 1.5, true.
Value = str | int | float | bool


@dataclass(frozen=True)
class Secret:
    environment: str
    key: str
    value: Value = field(repr=False)
    version: str | None  # the commit the value came from; None outside Git
    committed_at: datetime | None


@dataclass(frozen=True)
class Batch:
    environment: str
    values: Mapping[str, Value] = field(repr=False)
    version: str | None


@dataclass(frozen=True)
class KeyList:
    environment: str
    keys: tuple[str, ...]
    version: str | None


@dataclass(frozen=True)
class Version:
    version: str
    committed_at: datetime | None
    author: str
    message: str
    change: str  # "added", "changed" or "removed"


@dataclass(frozen=True)
class TokenRequest:
    """What to mint; None leaves the broker's default (ttl 15 min, ["secrets:read"])."""

    subject: str
    environment: str
    key_pattern: str
    ttl_minutes: int | None = None
    usage_limit: int | None = None
    permissions: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "subject": self.subject,
            "environment": self.environment,
            "key_pattern": self.key_pattern,
        }
        if self.ttl_minutes is not None:
            body["ttl_minutes"] = self.ttl_minutes
        if self.usage_limit is not None:
            body["usage_limit"] = self.usage_limit
        if self.permissions is not None:
            body["permissions"] = list(self.permissions)
        return body


@dataclass(frozen=True)
class TokenScope:
    subject: str
    environment: str
    key_pattern: str
    permissions: tuple[str, ...]
    usage_limit: int | None
    jti: str
    expires_at: str  # RFC 3339 UTC, as the broker wrote it


@dataclass(frozen=True)
class MintedToken:
    access_token: str = field(repr=False)
    token_type: str
    expires_in: int
    scope: TokenScope
    answer_json: str = field(repr=False)  # the answer's JSON text, exactly as received

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any], answer_json: str) -> MintedToken:
        details = answer["scope_details"]
        return cls(
            access_token=answer["access_token"],
            token_type=answer["token_type"],
            expires_in=answer["expires_in"],
            scope=TokenScope(
                subject=details["subject"],
                environment=details["environment"],
                key_pattern=details["key_pattern"],
                permissions=tuple(details["permissions"]),
                usage_limit=details.get("usage_limit"),
                jti=details["jti"],
                expires_at=details["expires_at"],
            ),
            answer_json=answer_json,
        )


def yaml_scalar(value: Value) -> str:
    """A value as YAML writes it (and as run-with-secrets injects it): "42", "true"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    return str(value)


def nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A document from '/'-joined keys, the inverse of the broker's flattening:
    `{"API_KEYS/openai": v}` becomes `{"API_KEYS": {"openai": v}}`."""
    document: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = document
        for segment in parents:
            node = node.setdefault(segment, {})
        node[leaf] = value
    return document
