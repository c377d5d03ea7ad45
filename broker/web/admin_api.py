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
    audited,
    authenticate,
    json_response,
    parts,
    read_body,
    read_json_object,
)

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


@admin.post("/vault/tokens/revoke")
@audited("token.revoke")
def revoke_token() -> Response:
    caller = authenticate("tokens:issue")
    jti = _jti_from_body()
    audit(revoked_jti=jti)
    parts().state.revoke(jti, min(_keep_until(caller, jti), LAST_INSTANT))
    return json_response({"revoked": jti})


@admin.post("/vault/tokens/revoke-self")
@audited("token.revoke_self")
def revoke_self() -> Response:
    caller = authenticate(None)
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


@admin.get("/audit")
@audited("audit.export", query=("environment", "subject", "outcome", "since", "until"))
def export_audit() -> Response:
    caller = authenticate("audit:read")
    query = AuditQuery.from_args(request.args.to_dict(flat=False), caller.scope.environment)
    audit(environment=query.environment)
    trail = parts().audit
    snapshot = TrailSnapshot(trail.path, trail.rotated_files)
    response = Response(snapshot.export(query), mimetype=EXPORT_MIMETYPE)
    response.call_on_close(snapshot.close)
    response.headers["Cache-Control"] = "no-store"
    return response
