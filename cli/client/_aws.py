"""AWS Secrets Manager's shapes for `VaultClient.get_secret_value`, so code
written against boto3 or aws-secretsmanager-caching moves over with a one-line change.

A SecretId is `ENVIRONMENT/KEY` (`prod/DATABASE_URL`, `dev/API_KEYS/openai`); VersionId
is a commit SHA; the only VersionStage is AWSCURRENT. A KEY naming a group of keys (a JSON
secret that `vanta-cli import aws` split into `db/user`, `db/password`) reads back as the
JSON object it was.
"""

from __future__ import annotations

import json
from typing import Any

from cli.client._errors import BadRequest
from cli.client._results import Batch, Secret, nested, yaml_scalar

CURRENT_STAGE = "AWSCURRENT"


def split_secret_id(secret_id: str) -> tuple[str, str]:
    """(environment, key) of `ENVIRONMENT/KEY`; BadRequest, before any request, otherwise."""
    environment, slash, key = str(secret_id).partition("/")
    if not slash or not environment or not key:
        raise BadRequest(400, "bad_request", "a SecretId is 'ENVIRONMENT/KEY'", None)
    return environment, key


def check_stage(version_stage: str | None) -> None:
    if version_stage not in (None, CURRENT_STAGE):
        raise BadRequest(
            400, "bad_request", f"the only VersionStage is {CURRENT_STAGE} (or a VersionId)", None
        )


def secret_value(secret: Secret, version_asked: bool) -> dict[str, Any]:
    """GetSecretValue's answer for `secret`: Name, VersionId, SecretString, VersionStages
    (["AWSCURRENT"] unless a VersionId was asked for) and CreatedDate (the commit's time)."""
    return {
        "Name": f"{secret.environment}/{secret.key}",
        "VersionId": secret.version,
        "SecretString": yaml_scalar(secret.value),
        "VersionStages": [] if version_asked else [CURRENT_STAGE],
        "CreatedDate": secret.committed_at,
    }


def group_secret_value(environment: str, key: str, batch: Batch) -> dict[str, Any]:
    """GetSecretValue's answer for a group of keys: its leaves as one JSON object (numbers
    and booleans keeping their type), the way AWS held the secret before the import."""
    below = {name[len(key) + 1 :]: value for name, value in batch.values.items()}
    return {
        "Name": f"{environment}/{key}",
        "VersionId": batch.version,
        "SecretString": json.dumps(nested(below)),
        "VersionStages": [CURRENT_STAGE],
        "CreatedDate": None,
    }
