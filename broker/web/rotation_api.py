"""GET /api/v1/rotation: rotation status of an environment's keys, served commit.

`rotation_report()` is also what the dashboard shows. Like the CLI, it compares
ciphertext across commits (broker.store.history) and never decrypts.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from flask import Blueprint, Response, request

from broker.errors import BadRequest, NotFound, SyncFailed
from broker.store import history
from broker.store.rotation import (
    KeyStatus,
    PolicyError,
    evaluate,
    most_urgent_first,
    read_policy_at,
)
from broker.store.tree import SecretStore, Snapshot
from broker.web.api import (
    audit,
    authenticate,
    check_environment_scope,
    json_response,
    parts,
)
from broker.web.endpoints import Answer, Endpoint, Param, route, schema

rotation_api = Blueprint("rotation", __name__, url_prefix="/api/v1")


class RotationUnavailable(SyncFailed):
    """The served tree cannot give rotation ages (a broken `.vanta.yaml`, a shallow clone)
    until an operator fixes it: 503 sync_failed, the contract's code for that."""

    default_message = "the rotation policy (.vanta.yaml) at the served commit is invalid"


def rotation_report(
    store: SecretStore, snapshot: Snapshot, environment: str, now: datetime | None = None
) -> list[KeyStatus]:
    """Every key of `environment` at `snapshot` with its rotation status, in key order.

    Raises NotFound when the environment has no file there, FileRefused when its file is
    not served, BadRequest when the secrets are not in Git (no history to read),
    RotationUnavailable for a broken `.vanta.yaml`."""
    tree = store.tree
    git_dir = tree.git_dir
    if git_dir is None or snapshot.version is None:
        raise BadRequest("rotation needs the secrets in a Git repository")
    if tree.blob(snapshot, environment) is None:
        raise NotFound(f"environment {environment!r} not found")
    common_dir = Path(tree.common_dir or git_dir)
    if (Path(git_dir) / "shallow").exists() or (common_dir / "shallow").exists():
        # Every key would look as old as the oldest fetched commit: no answer beats that.
        raise RotationUnavailable("the served repository is a shallow clone: key ages are unknown")
    try:
        policy = read_policy_at(str(git_dir), snapshot.version)
    except PolicyError as exc:
        raise RotationUnavailable(f"the rotation policy is invalid: {exc}") from None
    changes = history.last_changes(git_dir, snapshot.version, tree.file_path(environment))
    return evaluate(policy, environment, changes, now)


@route(
    rotation_api,
    Endpoint(
        "GET",
        "/rotation",
        "rotationCheck",
        "Rotation status of an environment's keys",
        "rotation",
        {200: Answer("Key ages.", schema("Rotation"))},
        event="rotation.check",
        permission="secrets:list",
        query=(Param("environment", schema("Environment"), "Required.", required=True),),
        errors=(404,),
    ),
)
def rotation_check() -> Response:
    claims = authenticate()
    environment = request.args.get("environment")
    if not environment:
        raise BadRequest("environment is required")
    check_environment_scope(claims, environment)
    snapshot = parts().store.served()
    audit(version=snapshot.version)
    statuses = rotation_report(parts().store, snapshot, environment)
    keys = [s.to_json() for s in most_urgent_first(statuses) if claims.scope.covers_key(s.key)]
    return json_response({"environment": environment, "version": snapshot.version, "keys": keys})
