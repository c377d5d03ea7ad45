"""POST /api/v1/sync: a forge's push webhook makes this broker fetch now (SPEC §11)."""

from __future__ import annotations

import hashlib
import hmac

from flask import Blueprint, Response, request

from broker.api import audit, json_response, parts
from broker.errors import NotFound, SignatureInvalid, SyncFailed, SyncRefused

sync = Blueprint("sync", __name__, url_prefix="/api/v1")

_REFUSALS = {
    "non_fast_forward": "the remote's commit does not fast-forward from the served one",
    "unsigned_commit": "a new commit is not signed by an allowed signer",
}


@sync.post("/sync")
def sync_webhook() -> Response:
    audit(event="git.sync")
    mirror, secret = parts().mirror, parts().config.webhook_secret
    if mirror is None or secret is None:
        raise NotFound("no such endpoint")
    body = request.get_data(cache=False)  # the payload itself is not needed: we fetch
    expected = (
        b"sha256=" + hmac.new(secret.reveal().encode(), body, hashlib.sha256).hexdigest().encode()
    )
    given = request.headers.get("X-Hub-Signature-256", "").encode("utf-8", "replace")
    if not hmac.compare_digest(expected, given):
        raise SignatureInvalid()
    outcome = mirror.sync()
    assert outcome is not None  # a blocking sync always runs
    audit(version=outcome.version)
    if outcome.failed:
        raise SyncFailed()
    if outcome.refused:
        audit(refused_commit=outcome.refused_commit)
        raise SyncRefused(outcome.refused, _REFUSALS[outcome.refused], outcome.version)
    return json_response({"version": outcome.version})
