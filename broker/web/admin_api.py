"""Token revocation and audit export routes: parse, call, serialise."""

from __future__ import annotations

import time
from typing import Any

import orjson
from flask import Blueprint, Response, request

from broker.audit.export import AuditQuery, TrailSnapshot
from broker.errors import BadRequest, NotFound, ScopeDenied
from broker.scope import ALL, environment_contains, pattern_contains
from broker.state.sqlite import RETENTION_SECONDS
from broker.tokens.claims import Claims
from broker.web.api import (
    audit,
    authenticate,
    json_response,
    parts,
    read_body,
    read_json_object,
)
from broker.web.endpoints import Answer, Endpoint, Param, Schema, route, schema

admin = Blueprint("admin", __name__, url_prefix="/api/v1")

MAX_JTI_LENGTH = 256
LAST_INSTANT = 253402300799  # 9999-12-31T23:59:59Z: what every state store can hold
EXPORT_MIMETYPE = "application/x-ndjson"


def _json_object(data: bytes) -> dict[str, Any]:
    """`data` as a JSON object (the same rules as read_json_object, for a body read)."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadRequest("the body must be valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _jti_from_body() -> str:
    body = read_json_object()
    unknown = set(body) - {"jti"}
    if unknown:
        raise BadRequest(f"unknown field: {sorted(unknown)[0][:64]}")
    jti = body.get("jti")
    if not (isinstance(jti, str) and 1 <= len(jti) <= MAX_JTI_LENGTH and jti.isprintable()):
        raise BadRequest(f"jti must be 1-{MAX_JTI_LENGTH} printable characters")
    return jti


def _keep_until(caller: Claims, jti: str) -> int:
    """How long the revocation of `jti` must be remembered; raise ScopeDenied or NotFound
    when `caller` may not revoke it."""
    state = parts().state
    minted = state.minted(jti)
    if minted is not None:
        audit(environment=minted.environment, pattern=minted.key_pattern)
        inside = environment_contains(
            caller.scope.environment, minted.environment
        ) and pattern_contains(caller.scope.key_pattern, minted.key_pattern)
        if not inside:
            raise ScopeDenied("the token is outside the caller's scope")
        return minted.expires_at + RETENTION_SECONDS
    if caller.scope.environment != ALL or caller.scope.key_pattern != ALL:
        raise NotFound("no token with that jti was minted here")
    # Not minted here (offline, or by another deployment): it may live up to the longest
    # lifetime that can be minted, counted from now.
    return int(time.time()) + parts().config.max_ttl_minutes * 60 + RETENTION_SECONDS


@route(
    admin,
    Endpoint(
        "POST",
        "/vault/tokens/revoke",
        "revokeToken",
        "Revoke a token by its jti",
        "tokens",
        {200: Answer("Revoked.", schema("Revoked"))},
        event="token.revoke",
        permission="tokens:issue",
        errors=(404, 413),
        body=schema("RevokeRequest"),
    ),
)
def revoke_token() -> Response:
    caller = authenticate()
    jti = _jti_from_body()
    audit(revoked_jti=jti)
    parts().state.revoke(jti, min(_keep_until(caller, jti), LAST_INSTANT))
    return json_response({"revoked": jti})


@route(
    admin,
    Endpoint(
        "POST",
        "/vault/tokens/revoke-self",
        "revokeSelf",
        "Revoke the token that makes the call",
        "tokens",
        {200: Answer("Revoked.", schema("Revoked"))},
        event="token.revoke_self",
        errors=(413,),
        body={"type": "object", "description": "Ignored; none is needed."},
        body_required=False,
    ),
)
def revoke_self() -> Response:
    caller = authenticate()
    data = read_body()  # none is needed; an oversized one is still 413
    if data.strip():
        _json_object(data)  # and anything sent must at least be a JSON object
    audit(
        revoked_jti=caller.jti,
        environment=caller.scope.environment,
        pattern=caller.scope.key_pattern,
    )
    keep_until = min(caller.expires_at + RETENTION_SECONDS, LAST_INSTANT)
    parts().state.revoke(caller.jti, keep_until)
    return json_response({"revoked": caller.jti})


_TEXT: Schema = {"type": "string"}
_AUDIT_FILTERS = tuple(  # an empty value is no filter
    Param(name, {"anyOf": [kind, {"const": ""}]}, description)
    for name, kind, description in (
        ("environment", schema("Environment"), "Only this environment's records."),
        ("subject", {**_TEXT, "maxLength": 128}, "Only this subject's records."),
        ("outcome", {"enum": ["success", "denied", "error"]}, "Only this outcome."),
        ("since", {**_TEXT, "format": "date-time"}, "From this instant (inclusive)."),
        ("until", {**_TEXT, "format": "date-time"}, "Until this instant (exclusive)."),
    )
)
_AUDIT_LINES: Schema = {
    "type": "array",
    "items": schema("AuditRecord"),
    "description": "JSONL: one AuditRecord per line (read as an array of the lines, "
    "as OpenAPI 3.2 reads sequential media types).",
}


@route(
    admin,
    Endpoint(
        "GET",
        "/audit",
        "exportAudit",
        "Export audit records as JSONL",
        "audit",
        {
            200: Answer(
                "Matching records, oldest first.", _AUDIT_LINES, EXPORT_MIMETYPE, secret=True
            )
        },
        event="audit.export",
        permission="audit:read",
        query=_AUDIT_FILTERS,
    ),
)
def export_audit() -> Response:
    caller = authenticate()
    query = AuditQuery.from_args(request.args.to_dict(flat=False), caller.scope.environment)
    audit(environment=query.environment)
    trail = parts().audit
    snapshot = TrailSnapshot(trail.path, trail.rotated_files)
    response = Response(snapshot.export(query), mimetype=EXPORT_MIMETYPE)
    response.call_on_close(snapshot.close)
    response.headers["Cache-Control"] = "no-store"
    return response
