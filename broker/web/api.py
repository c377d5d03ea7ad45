"""The /api/v1 routes: parse, call, serialise. Errors are raised, never built here."""

from __future__ import annotations

import time
from typing import Any

import orjson
from flask import Blueprint, Response, g, request

from broker import scope as names
from broker.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ScopeDenied,
    TokenInvalid,
    TokenRevoked,
    UsageExhausted,
)
from broker.scope import ALL, environment_contains, pattern_contains, pattern_matches
from broker.state.sqlite import MintedToken
from broker.store.history import history_answer
from broker.store.tree import Snapshot
from broker.tokens.claims import Claims, MintRequest, mint, mint_answer
from broker.web.bodies import body_turn
from broker.web.endpoints import Answer, Endpoint, Param, route, schema
from broker.web.parts import parts
from broker.web.responses import BrokerResponse

api = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_BATCH_KEYS = 1000
MAX_BODY_BYTES = 1024 * 1024


_JSON = [("Content-Type", "application/json")]
_SECRET_JSON = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]


def json_response(body: Any, status: int = 200, secret: bool = False) -> Response:
    return BrokerResponse(
        orjson.dumps(body), status=status, headers=_SECRET_JSON if secret else _JSON
    )


def check_query(allowed: tuple[str, ...] | None) -> None:
    if allowed is None:
        return
    for name in request.args:
        if name not in allowed:
            raise BadRequest(f"unknown query parameter {name[:64]!r}")
        if len(request.args.getlist(name)) > 1:
            raise BadRequest(f"{name} is given more than once")


def audit(**fields: Any) -> None:
    """Fill in this request's audit record (written once, after the answer is built)."""
    g.audit.update(fields)


def authenticate() -> Claims:
    """The caller's verified claims; 401 for any token fault, 403 if revoked or lacking
    the permission the route declares."""
    ctx = g._get_current_object()
    return _authenticate(ctx.declared.permission, parts(), ctx)


def _authenticate(permission: str | None, wired: Any, ctx: Any) -> Claims:
    header = request.environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise TokenInvalid()
    claims: Claims = wired.tokens.verify(token)  # tokens.verify, remembered per worker
    record = ctx.audit
    record["jti"] = claims.jti
    record["subject"] = claims.subject
    ctx.claims = claims
    limits = wired.limits
    if limits is not None:
        retry_after = limits.hit_token(claims.jti)
        if retry_after is not None:
            raise RateLimited(retry_after)
    if wired.state.is_revoked(claims.jti):
        raise TokenRevoked()
    if permission is not None and permission not in claims.scope.permissions:
        raise PermissionDenied(f"the token lacks {permission}")
    return claims


def authorize_key(environment: str, key: str) -> tuple[Claims, Any]:
    """The checks before one key is read or its history shown: names recorded for the
    audit, the token verified and holding the route's permission, environment and key
    inside its scope. Returns the claims and the wired parts."""
    wired = parts()
    ctx = g._get_current_object()
    record = ctx.audit
    valid_environment = names.is_environment(environment)
    valid_key = names.is_key(key)
    if valid_environment:  # before authentication: a denied request says what it wanted
        record["environment"] = environment
        if valid_key:
            record["key"] = key
    claims = _authenticate(ctx.declared.permission, wired, ctx)
    if not valid_environment:
        names.check_environment(environment)
    if not claims.scope.covers_environment(environment):
        raise ScopeDenied("the environment is outside the token's scope")
    if not valid_key:
        names.check_key(key)
    if not claims.scope.covers_key(key):
        raise ScopeDenied("the key is outside the token's pattern")
    return claims, wired


TOKEN_ENDPOINTS = frozenset(
    f"/api/v1/vault/tokens/{name}" for name in ("generate", "revoke", "revoke-self")
)


def note_target(environment: str, key: str | None = None) -> None:
    """Put the names a request is about in its audit record, when they are valid names,
    before authentication: a denied request says which key it wanted."""
    if names.is_environment(environment):
        audit(environment=environment)
        if key is not None and names.is_key(key):
            audit(key=key)


def reject_reserved(environment: str) -> None:
    """Paths under /vault/tokens/ name token endpoints (POST only); anything else there
    allows no method at all."""
    if environment in names.RESERVED_ENVIRONMENTS:
        raise MethodNotAllowed(allow=("POST",) if request.path in TOKEN_ENDPOINTS else ())


def check_environment_scope(claims: Claims, environment: str) -> str:
    names.check_environment(environment)
    audit(environment=environment)
    if not claims.scope.covers_environment(environment):
        raise ScopeDenied("the environment is outside the token's scope")
    return environment


def snapshot_for(version: str | None) -> Snapshot:
    store = parts().store
    return store.served() if version is None else store.at_version(version)


def count_use(claims: Claims) -> None:
    """Use one of a limited token's uses; the use is given back if the answer never leaves."""
    if claims.usage_limit is None:
        return
    if not parts().state.use_one(claims.jti, claims.usage_limit, claims.expires_at):
        raise UsageExhausted()
    g.used_jti = claims.jti


def read_body() -> bytes:
    """The raw body, at most 1 MiB: PayloadTooLarge beyond, with or without a length."""
    with body_turn():
        if request.content_length is not None:
            return request.get_data(cache=False)
        # A chunked body: Werkzeug would silently cut it at the limit; measure it here.
        data = request.environ["wsgi.input"].read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise PayloadTooLarge()
    return data


def read_json_object() -> dict[str, Any]:
    data = read_body()
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadRequest("the body must be valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


# -- tokens ---------------------------------------------------------------------------


@route(
    api,
    Endpoint(
        "POST",
        "/vault/tokens/generate",
        "generateToken",
        "Mint a token inside the caller's own scope",
        "tokens",
        {201: Answer("Minted.", schema("MintAnswer"), secret=True)},
        event="token.generate",
        permission="tokens:issue",
        errors=(413,),
        body=schema("MintRequest"),
    ),
)
def generate_token() -> Response:
    issuer = authenticate()
    if issuer.usage_limit is not None:
        raise PermissionDenied(
            "a token with a usage limit cannot mint: its tokens would escape the limit"
        )
    if time.time() >= issuer.expires_at:  # reads allow a leeway past exp; minting none
        raise TokenInvalid()
    config = parts().config
    wanted = MintRequest.from_json(read_json_object(), config.max_ttl_minutes)
    audit(environment=wanted.scope.environment)
    if not environment_contains(issuer.scope.environment, wanted.scope.environment):
        raise ScopeDenied("the environment is outside the issuer's scope")
    if not pattern_contains(issuer.scope.key_pattern, wanted.scope.key_pattern):
        raise ScopeDenied("the key pattern is outside the issuer's pattern")
    if not set(wanted.scope.permissions) <= set(issuer.scope.permissions):
        raise ScopeDenied("the permissions exceed the issuer's")
    token, claims = mint(
        wanted,
        config.keyring,
        issuer=config.jwt_issuer,
        audience=config.jwt_audience,
        not_after=issuer.expires_at,
    )
    parts().state.record_minted(
        MintedToken(
            claims.jti, claims.scope.environment, claims.scope.key_pattern, claims.expires_at
        )
    )
    audit(minted_jti=claims.jti, pattern=claims.scope.key_pattern)
    return json_response(mint_answer(token, claims), status=201, secret=True)


# -- reading secrets -----------------------------------------------------------------


@route(
    api,
    Endpoint(
        "GET",
        "/vault/<environment>/<path:key>",
        "readSecret",
        "Read one value (uses one of a limited token's uses)",
        "secrets",
        {200: Answer("The value.", schema("Secret"), secret=True)},
        event="secret.read",
        permission="secrets:read",
        query=(
            Param(
                "version",
                {"type": "string", "pattern": "^[0-9a-fA-F]{7,40}$"},
                "A commit (7-40 hex digits) reachable from the served ref; unknown is 404.",
            ),
        ),
        errors=(404, 405),
    ),
)
def read_secret(environment: str, key: str) -> Response:
    reject_reserved(environment)
    claims, wired = authorize_key(environment, key)
    store = wired.store
    version = request.args.get("version") if request.environ.get("QUERY_STRING") else None
    snapshot = store.served() if version is None else store.at_version(version)
    g.audit["version"] = snapshot.version
    document = store.document(snapshot, environment)
    if key not in document:
        raise NotFound(f"key {key!r} not found")
    if claims.usage_limit is not None:
        count_use(claims)
    body = {
        "environment": environment,
        "key": key,
        "value": document[key],
        "version": snapshot.version,
        "committed_at": snapshot.committed_at,
    }
    return json_response(body, secret=True)


@route(
    api,
    Endpoint(
        "GET",
        "/vault/<environment>",
        "listKeys",
        "List key names (never values)",
        "secrets",
        {200: Answer("Key names.", schema("KeyList"))},
        event="secret.list",
        permission="secrets:list",
        query=(Param("pattern", schema("KeyPattern"), "Default `*`."),),
        errors=(404, 405),
    ),
)
def list_keys(environment: str) -> Response:
    reject_reserved(environment)
    note_target(environment)
    claims = authenticate()
    check_environment_scope(claims, environment)
    pattern = names.check_pattern(request.args.get("pattern", ALL), "pattern")
    audit(pattern=pattern)
    snapshot = snapshot_for(None)
    audit(version=snapshot.version)
    document = parts().store.document(snapshot, environment)
    keys = [k for k in document if claims.scope.covers_key(k) and pattern_matches(pattern, k)]
    return json_response({"environment": environment, "keys": keys, "version": snapshot.version})


@route(
    api,
    Endpoint(
        "POST",
        "/vault/<environment>/batch",
        "batchRead",
        "Read several values by name or pattern (one use)",
        "secrets",
        {200: Answer("The values.", schema("BatchValues"), secret=True)},
        event="secret.batch",
        permission="secrets:read",
        permission_note=" (and secrets:list for a pattern)",
        errors=(404, 405, 413),
        body=schema("BatchRequest"),
    ),
)
def batch_read(environment: str) -> Response:
    reject_reserved(environment)
    note_target(environment)
    claims = authenticate()
    check_environment_scope(claims, environment)
    body = read_json_object()
    if set(body) - {"keys", "pattern"} or len(body) != 1:
        raise BadRequest("the body must hold exactly one of keys and pattern")
    if "keys" in body:
        wanted = body["keys"]
        if not isinstance(wanted, list) or not 1 <= len(wanted) <= MAX_BATCH_KEYS:
            raise BadRequest(f"keys must be a list of 1 to {MAX_BATCH_KEYS} key names")
        for k in wanted:
            names.check_key(k, "keys")
        wanted = list(dict.fromkeys(wanted))
        audit(keys=wanted)
        if not all(claims.scope.covers_key(k) for k in wanted):
            raise ScopeDenied("a key is outside the token's pattern")
        snapshot = snapshot_for(None)
        audit(version=snapshot.version)
        document = parts().store.document(snapshot, environment)
        missing = [k for k in wanted if k not in document]
        if missing:
            raise NotFound(f"key {missing[0]!r} not found")
    else:
        pattern = names.check_pattern(body["pattern"], "pattern")
        audit(pattern=pattern)
        if not claims.has("secrets:list"):
            raise PermissionDenied("a pattern batch needs secrets:list")
        snapshot = snapshot_for(None)
        audit(version=snapshot.version)
        document = parts().store.document(snapshot, environment)
        wanted = [k for k in document if claims.scope.covers_key(k) and pattern_matches(pattern, k)]
        audit(keys=wanted)
    count_use(claims)
    values = {k: document[k] for k in wanted}
    body = {"environment": environment, "values": values, "version": snapshot.version}
    return json_response(body, secret=True)


@route(
    api,
    Endpoint(
        "GET",
        "/history/<environment>/<path:key>",
        "keyHistory",
        "The commits that changed a key, newest first",
        "secrets",
        {200: Answer("Its history.", schema("History"))},
        event="secret.history",
        permission="secrets:list",
        errors=(404,),
    ),
)
def key_history(environment: str, key: str) -> Response:
    authorize_key(environment, key)
    snapshot = snapshot_for(None)
    audit(version=snapshot.version)
    return json_response(history_answer(parts().store, snapshot, environment, key))
