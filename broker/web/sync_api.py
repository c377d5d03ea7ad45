"""POST /api/v1/sync: a forge's push webhook makes this broker fetch now."""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from flask import Blueprint, Response, request

from broker.errors import AuditUnavailable, NotFound, SignatureInvalid, SyncFailed, SyncRefused
from broker.store.remote import SyncOutcome
from broker.web.api import audit, json_response
from broker.web.bodies import body_turn
from broker.web.endpoints import Answer, Endpoint, Param, route, schema
from broker.web.parts import parts

sync = Blueprint("sync", __name__, url_prefix="/api/v1")
log = logging.getLogger("vanta.remote")

_REFUSALS = {
    "non_fast_forward": "the remote's commit does not fast-forward from the served one",
    "unsigned_commit": "a new commit is not signed by an allowed signer",
}


@route(
    sync,
    Endpoint(
        "POST",
        "/sync",
        "syncWebhook",
        "A forge's push webhook: fetch the Git remote now",
        "sync",
        {
            200: Answer("The commit now served.", schema("Synced")),
            409: Answer("Refused: the last good commit stays.", schema("SyncRefusal")),
        },
        event="git.sync",
        query=None,  # forges may add their own
        headers=(
            Param(
                "X-Hub-Signature-256",
                {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"},
                "HMAC-SHA256 of the raw body with VANTA_WEBHOOK_SECRET.",
                required=True,
                where="header",
            ),
        ),
        errors=(404, 413, 429, 503),
        own_errors=(SignatureInvalid, SyncRefused),
        body={"description": "The forge's push payload; ignored."},
        public=True,
    ),
)
def sync_webhook() -> Response:
    mirror, secret = parts().mirror, parts().config.webhook_secret
    if mirror is None or secret is None:
        raise NotFound("no such endpoint")
    with body_turn():
        body = request.get_data(cache=False)  # the payload itself is not needed: we fetch
    expected = (
        b"sha256=" + hmac.new(secret.reveal().encode(), body, hashlib.sha256).hexdigest().encode()
    )
    given = request.headers.get("X-Hub-Signature-256", "").encode("utf-8", "replace")
    if not hmac.compare_digest(expected, given):
        raise SignatureInvalid()
    outcome = mirror.sync()
    assert outcome is not None  # a blocking sync always runs
    note_sync(parts(), outcome, from_poll=False)
    audit(version=outcome.version)
    if outcome.failed:
        raise SyncFailed()
    if outcome.refused:
        audit(refused_commit=outcome.refused_commit)
        raise SyncRefused(outcome.refused, _REFUSALS[outcome.refused], outcome.version)
    return json_response({"version": outcome.version})


def note_sync(parts: Any, outcome: SyncOutcome, from_poll: bool) -> None:
    """Count a sync; a refusal found by the poll is audited once per refused commit
    (a webhook's refusal is audited with its request)."""
    result = "failed" if outcome.failed else "refused" if outcome.refused else "success"
    parts.metrics.git_sync.labels(result=result).inc()
    if not (from_poll and outcome.refused and outcome.first_refusal):
        return
    record = {
        "event": "git.sync",
        "request_id": None,
        "jti": None,
        "subject": None,
        "environment": None,
        "key": None,
        "version": outcome.version,
        "client_ip": None,
        "outcome": "denied",
        "status": 409,
        "error": outcome.refused,
        "refused_commit": outcome.refused_commit,
    }
    try:
        parts.audit.append(record)
    except AuditUnavailable:
        parts.metrics.audit_write_failures.inc()
        log.error("could not audit a refused sync")
