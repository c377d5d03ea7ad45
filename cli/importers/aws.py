"""Reading AWS Secrets Manager for `vanta-cli import aws`.

boto3 finds credentials, region and endpoint the standard way (environment, profiles,
instance roles; `AWS_ENDPOINT_URL` for a local endpoint). Every secret whose name starts
with the prefix (case-sensitive) is read at its AWSCURRENT version: a SecretString
holding a JSON object becomes nested keys (`<name>/<field>`, objects nesting further,
numbers and booleans keeping their type, nulls and arrays skipped with a warning); any
other string becomes one key. Binary secrets are skipped with a warning naming them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from cli.extras import missing_extra
from cli.importers.plan import (
    Candidate,
    Collected,
    ImportFailed,
    candidate,
    clean_segment,
    collected,
    key_from_name,
)

ORIGIN = "AWS Secrets Manager"


def collect_aws(prefix: str, client: Any = None) -> Collected:
    """The candidates under `prefix`; ImportFailed (one line) when AWS cannot be read."""
    try:
        import boto3
        import botocore.exceptions
    except ModuleNotFoundError as exc:
        raise ImportFailed(f"vanta-cli import aws {missing_extra(exc, 'aws')}") from None
    try:
        client = client or boto3.client("secretsmanager")
        items: list[Candidate | str] = []
        warnings: list[str] = []
        for name, arn in sorted(_names(client, prefix)):
            _read_secret(client, name, arn, prefix, items, warnings)
    except botocore.exceptions.NoRegionError:
        raise ImportFailed(
            "AWS: no region (set AWS_DEFAULT_REGION or AWS_REGION, or a profile's region)"
        ) from None
    except botocore.exceptions.NoCredentialsError:
        raise ImportFailed("AWS: no credentials (none in the standard credential chain)") from None
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise ImportFailed(f"AWS: {exc}") from None
    return collected(items, warnings)


def _names(client: Any, prefix: str) -> Iterator[tuple[str, str]]:
    # The service's name filter is a case-insensitive prefix match (and '!' negates), so it
    # only narrows the listing; the case-sensitive test is ours.
    filters = [{"Key": "name", "Values": [prefix]}] if prefix and prefix[0] != "!" else []
    pages = client.get_paginator("list_secrets").paginate(
        **({"Filters": filters} if filters else {})
    )
    for page in pages:
        for entry in page.get("SecretList", []):
            name = entry.get("Name", "")
            if name.startswith(prefix):
                yield name, entry.get("ARN") or name


def _read_secret(
    client: Any,
    name: str,
    arn: str,
    prefix: str,
    items: list[Candidate | str],
    warnings: list[str],
) -> None:
    import botocore.exceptions

    try:
        answer = client.get_secret_value(SecretId=arn)
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        warnings.append(f"skipped secret {name!r}: it has no current value")
        return
    text = answer.get("SecretString")
    if text is None:
        warnings.append(f"skipped secret {name!r}: it is binary (SecretBinary)")
        return
    key = key_from_name(name[len(prefix) :])
    source = f"secret {name!r}"
    document = _json_object(text)
    if document is None:
        items.append(candidate(key, text, source))
    else:
        items.extend(_fields(key, document, source, warnings))


def _json_object(text: str) -> dict[str, Any] | None:
    """The JSON object the text holds, or None for any other text (NaN and Infinity,
    which JSON does not have, make it plain text too)."""
    try:
        document = json.loads(text, parse_constant=_not_json)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _not_json(constant: str) -> Any:
    raise ValueError(constant)


def _fields(
    key: str,
    document: dict[str, Any],
    source: str,
    warnings: list[str],
    path: tuple[str, ...] = (),
) -> Iterator[Candidate | str]:
    """A JSON object's leaves under `key` (which may be empty: the prefix named the secret)."""
    if not document:
        where = f"{source} field {'/'.join(path)!r}" if path else source
        warnings.append(f"skipped {where}: an empty JSON object")
    for name, value in document.items():
        child = f"{key}/{clean_segment(name)}" if key else clean_segment(name)
        where = f"{source} field {'/'.join((*path, name))!r}"
        if isinstance(value, dict):
            yield from _fields(child, value, source, warnings, (*path, name))
        elif value is None or isinstance(value, list):
            warnings.append(f"skipped {where}: {'null' if value is None else 'an array'}")
        elif isinstance(value, float) and not math.isfinite(value):
            warnings.append(f"skipped {where}: a number too large for YAML")
        else:
            yield candidate(child, value, where)
