"""GET /api/v1/openapi.json: the OpenAPI 3.1 document of every /api/v1 endpoint.

The document is data built here, next to nothing else, so that one file says what every
answer of the API looks like. `tests/test_schemathesis.py` holds a running broker to it.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

import orjson
from flask import Blueprint, Response, request

from broker.scope import MAX_KEY_LENGTH, PERMISSIONS
from broker.web.parts import parts

openapi = Blueprint("openapi", __name__, url_prefix="/api/v1")

Schema = dict[str, Any]

ERROR_CODES = (
    "bad_request",
    "token_invalid",
    "scope_denied",
    "permission_denied",
    "usage_exhausted",
    "token_revoked",
    "not_found",
    "method_not_allowed",
    "payload_too_large",
    "decrypt_failed",
    "audit_unavailable",
    "state_unavailable",
    "signature_invalid",
    "non_fast_forward",
    "unsigned_commit",
    "sync_failed",
    "rate_limited",
)
AUDIT_EVENTS = (
    "token.generate",
    "token.revoke",
    "token.revoke_self",
    "secret.read",
    "secret.list",
    "secret.batch",
    "secret.history",
    "audit.export",
    "rotation.check",
    "git.sync",
    "request",
)
# Which codes each error status carries; "401s" of the webhook are its own.
_ERRORS: dict[int, tuple[str, tuple[str, ...], str]] = {
    400: ("BadRequest", ("bad_request",), "Malformed input; the message names the field."),
    401: ("Unauthorized", ("token_invalid",), "Bearer token missing or invalid (generic)."),
    403: (
        "Forbidden",
        ("scope_denied", "permission_denied", "usage_exhausted", "token_revoked"),
        "Outside the token's scope, permission missing, usage used up, or revoked.",
    ),
    404: ("NotFound", ("not_found",), "Not found (only said for names inside the scope)."),
    405: ("MethodNotAllowed", ("method_not_allowed",), "The path names a reserved resource."),
    413: ("PayloadTooLarge", ("payload_too_large",), "Request body over 1 MiB."),
    429: ("TooManyRequests", ("rate_limited",), "Rate limited; retry after Retry-After seconds."),
    503: (
        "Unavailable",
        ("decrypt_failed", "audit_unavailable", "state_unavailable", "sync_failed"),
        "Decryption, audit, state store or served tree unavailable, or a secrets file that "
        "is not served (YAML anchors or aliases, or too large); nothing secret left.",
    ),
}
_AUTHENTICATED = (400, 401, 403, 429, 503)  # what any bearer-token endpoint may answer
_EXAMPLES: dict[str, Any] = {  # the contract's own examples
    "MintRequest": {
        "subject": "billing-api",
        "environment": "prod",
        "key_pattern": "DATABASE_*",
        "ttl_minutes": 15,
        "usage_limit": 5,
        "permissions": ["secrets:read"],
    },
    "BatchRequest": {"keys": ["DATABASE_URL", "API_KEY"]},
    "RevokeRequest": {"jti": "Lx0h1K6oQ2m9Vb3wYc8tZr5uNp4sEa7d"},
}


def _ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> Schema:
    return _ref("schemas", name)


def _object(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """A closed JSON object: every property named, the `required` ones present."""
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": list(required),
        "additionalProperties": False,
    }


def _json(schema: Schema) -> dict[str, Schema]:
    return {"application/json": {"schema": schema}}


def _answer(description: str, schema: Schema, **headers: Schema) -> Schema:
    return {
        "description": description,
        "headers": {"X-Request-Id": _ref("headers", "RequestId"), **headers},
        "content": _json(schema),
    }


def _responses(ok: dict[int, Schema], *errors: int) -> dict[str, Schema]:
    answers = {str(status): body for status, body in ok.items()}
    for status in sorted(errors):
        answers[str(status)] = _ref("responses", _ERRORS[status][0])
    return answers


def _operation(
    operation_id: str,
    summary: str,
    tag: str,
    responses: dict[str, Schema],
    *,
    needs: str | None = None,
    public: bool = False,
    parameters: list[Schema] | None = None,
    body: Schema | None = None,
    body_required: bool = True,
) -> Schema:
    """One operation: a bearer token (`needs` naming its permission) unless `public`."""
    operation: Schema = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if public:
        operation["security"] = []
    if needs:
        operation["description"] = f"Needs a bearer token with `{needs}`."
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": body_required, "content": _json(body)}
    operation["responses"] = responses
    return operation


def _param(name: str, where: str, schema: Schema, description: str, required: bool) -> Schema:
    return {
        "name": name,
        "in": where,
        "required": required,
        "description": description,
        "schema": schema,
    }


_ENVIRONMENT = _param("environment", "path", _schema("Environment"), "Environment name.", True)
_KEY = _param(
    "key", "path", _schema("Key"), "Key path, `/` between segments (`API_KEYS/openai`).", True
)


def _schemas(max_ttl_minutes: int) -> dict[str, Schema]:
    version = _schema("Version")
    time = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC."}
    printable = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    error_body = _object(
        {
            "error": _object(
                {
                    "code": {"type": "string", "enum": list(ERROR_CODES)},
                    "message": {"type": "string"},
                }
            ),
            "request_id": {"type": "string"},
        }
    )
    scope_details = _object(
        {
            "subject": {"type": "string"},
            "environment": _schema("EnvironmentOrAll"),
            "key_pattern": _schema("KeyPattern"),
            "permissions": {"type": "array", "items": _schema("Permission"), "minItems": 1},
            "usage_limit": {"type": ["integer", "null"], "minimum": 1},
            "jti": {"type": "string"},
            "expires_at": time,
        }
    )
    rotation_key = _object(
        {
            "environment": _schema("Environment"),
            "key": _schema("Key"),
            "last_changed": {"type": "string", "pattern": "^[0-9a-f]{40}$"},
            "changed_at": time,
            "age_days": {"type": "integer"},
            "max_age_days": {"type": "integer"},
            "status": {"type": "string", "enum": ["ok", "due", "overdue"]},
        }
    )
    nullable_text = {"type": ["string", "null"]}
    schemas: dict[str, Schema] = {
        "Environment": {
            "type": "string",
            "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$",
            "not": {"const": "tokens"},
            "examples": ["prod"],
            "description": "`tokens` is reserved for the token endpoints.",
        },
        "EnvironmentOrAll": {"anyOf": [_schema("Environment"), {"const": "*"}]},
        "Key": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_KEY_LENGTH,
            "pattern": "^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$",
            "examples": ["DATABASE_URL"],
        },
        "KeyPattern": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_KEY_LENGTH,
            "pattern": "^[A-Za-z0-9_./*?-]+$",
            "examples": ["DATABASE_*"],
            "description": "Glob over keys: `*` any run (`/` included), `?` one character.",
        },
        "Permission": {"type": "string", "enum": list(PERMISSIONS)},
        "Version": {
            "type": ["string", "null"],
            "pattern": "^[0-9a-f]{40}$",
            "description": "Full SHA of the commit answered from; null outside Git.",
        },
        "Value": {"type": ["string", "number", "boolean"], "description": "A leaf, typed."},
        "Error": error_body,
        "SyncRefusal": _object(
            {
                "error": _object(
                    {
                        "code": {"enum": ["non_fast_forward", "unsigned_commit"]},
                        "message": {"type": "string"},
                    }
                ),
                "version": version,
                "request_id": {"type": "string"},
            }
        ),
        "MintRequest": _object(
            {
                "subject": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 128,
                    "pattern": printable,
                },
                "environment": _schema("EnvironmentOrAll"),
                "key_pattern": _schema("KeyPattern"),
            },
            {
                "ttl_minutes": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": max_ttl_minutes,
                    "default": 15,
                },
                "usage_limit": {"type": ["integer", "null"], "minimum": 1, "maximum": 2**53},
                "permissions": {
                    "type": "array",
                    "items": _schema("Permission"),
                    "minItems": 1,
                    "default": ["secrets:read"],
                },
            },
        ),
        "MintAnswer": _object(
            {
                "access_token": {"type": "string"},
                "token_type": {"const": "Bearer"},
                "expires_in": {"type": "integer", "minimum": 0},
                "scope_details": scope_details,
            }
        ),
        "RevokeRequest": _object(
            {"jti": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": printable}}
        ),
        "Revoked": _object({"revoked": {"type": "string"}}),
        "Secret": _object(
            {
                "environment": _schema("Environment"),
                "key": _schema("Key"),
                "value": _schema("Value"),
                "version": version,
                "committed_at": {**time, "type": ["string", "null"]},
            }
        ),
        "KeyList": _object(
            {
                "environment": _schema("Environment"),
                "keys": {"type": "array", "items": _schema("Key")},
                "version": version,
            }
        ),
        "BatchRequest": {
            "oneOf": [
                _object(
                    {
                        "keys": {
                            "type": "array",
                            "items": _schema("Key"),
                            "minItems": 1,
                            "maxItems": 1000,
                        }
                    }
                ),
                _object({"pattern": _schema("KeyPattern")}),
            ]
        },
        "BatchValues": _object(
            {
                "environment": _schema("Environment"),
                "values": {
                    "type": "object",
                    "propertyNames": _schema("Key"),
                    "additionalProperties": _schema("Value"),
                },
                "version": version,
            }
        ),
        "History": _object(
            {
                "environment": _schema("Environment"),
                "key": _schema("Key"),
                "versions": {
                    "type": "array",
                    "description": "Newest first.",
                    "items": _object(
                        {
                            "version": {"type": "string", "pattern": "^[0-9a-f]{40}$"},
                            "committed_at": time,
                            "author": {"type": "string"},
                            "message": {"type": "string"},
                            "change": {"enum": ["added", "changed", "removed"]},
                        }
                    ),
                },
            },
            {
                "skipped": {
                    "type": "array",
                    "description": (
                        "Present only when some commit's version of the file is not served "
                        "(YAML anchors or aliases, or too large): those versions are left "
                        "out of `versions`, and the next commit is compared with the ones "
                        "before them. Newest first."
                    ),
                    "items": _object(
                        {
                            "version": {"type": "string", "pattern": "^[0-9a-f]{40}$"},
                            "committed_at": time,
                            "author": {"type": "string"},
                            "message": {"type": "string"},
                            "reason": {"type": "string"},
                        }
                    ),
                },
            },
        ),
        "Rotation": _object(
            {
                "environment": _schema("Environment"),
                "version": version,
                "keys": {
                    "type": "array",
                    "items": rotation_key,
                    "description": "Most urgent first.",
                },
            }
        ),
        "AuditRecord": {
            "type": "object",
            "description": "One line of the audit trail, chained by prev_hash and hash.",
            "properties": {
                "ts": time,
                "event": {"enum": list(AUDIT_EVENTS)},
                "request_id": nullable_text,
                "jti": nullable_text,
                "subject": nullable_text,
                "environment": nullable_text,
                "key": nullable_text,
                "keys": {"type": ["array", "null"], "items": {"type": "string"}},
                "version": nullable_text,
                "client_ip": nullable_text,
                "outcome": {"enum": ["success", "denied", "error"]},
                "status": {"type": "integer", "minimum": 100, "maximum": 599},
                "error": {"type": ["string", "null"], "description": "The answer's code."},
                "prev_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            },
            "required": [
                "ts",
                "event",
                "request_id",
                "jti",
                "subject",
                "environment",
                "version",
                "client_ip",
                "outcome",
                "status",
                "error",
                "prev_hash",
                "hash",
            ],
        },
        "Synced": _object({"version": {"type": "string", "pattern": "^[0-9a-f]{40}$"}}),
    }
    for name, example in _EXAMPLES.items():
        schemas[name]["examples"] = [example]
    return schemas


def _error_response(codes: tuple[str, ...], description: str, **headers: Schema) -> Schema:
    code_is = {"properties": {"error": {"properties": {"code": {"enum": list(codes)}}}}}
    return _answer(description, {"allOf": [_schema("Error"), code_is]}, **headers)


def _components(max_ttl_minutes: int) -> Schema:
    responses = {
        name: _error_response(codes, description)
        for status, (name, codes, description) in _ERRORS.items()
        if status != 429
    }
    retry_after = {
        "required": True,
        "description": "Whole seconds to wait.",
        "schema": {"type": "integer", "minimum": 0},
    }
    responses["TooManyRequests"] = _error_response(
        _ERRORS[429][1], _ERRORS[429][2], **{"Retry-After": retry_after}
    )
    return {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "An HS256 JWT the broker (or `vanta-cli token generate "
                "--offline`) minted; scope: environment, key glob, permissions.",
            }
        },
        "headers": {
            "RequestId": {
                "required": True,
                "description": "This request's id, as in the audit trail.",
                "schema": {"type": "string"},
            },
            "NoStore": {
                "required": True,
                "description": "Answers carrying secrets are never cached.",
                "schema": {"const": "no-store"},
            },
        },
        "schemas": _schemas(max_ttl_minutes),
        "responses": responses,
    }


def _paths() -> dict[str, Schema]:
    no_store = {"Cache-Control": _ref("headers", "NoStore")}
    version_param = _param(
        "version",
        "query",
        {"type": "string", "pattern": "^[0-9a-fA-F]{7,40}$"},
        "A commit (7-40 hex digits) reachable from the served ref; unknown is 404.",
        False,
    )
    text = {"type": "string"}
    audit_params = [  # an empty value is no filter
        _param(name, "query", {"anyOf": [schema, {"const": ""}]}, description, False)
        for name, schema, description in (
            ("environment", _schema("Environment"), "Only this environment's records."),
            ("subject", {**text, "maxLength": 128}, "Only this subject's records."),
            ("outcome", {"enum": ["success", "denied", "error"]}, "Only this outcome."),
            ("since", {**text, "format": "date-time"}, "From this instant (inclusive)."),
            ("until", {**text, "format": "date-time"}, "Until this instant (exclusive)."),
        )
    ]
    audit_lines = {
        "schema": {
            "type": "array",
            "items": _schema("AuditRecord"),
            "description": "JSONL: one AuditRecord per line (read as an array of the lines, "
            "as OpenAPI 3.2 reads sequential media types).",
        }
    }
    return {
        "/api/v1/vault/tokens/generate": {
            "post": _operation(
                "generateToken",
                "Mint a token inside the caller's own scope",
                "tokens",
                _responses(
                    {201: _answer("Minted.", _schema("MintAnswer"), **no_store)},
                    413,
                    *_AUTHENTICATED,
                ),
                needs="tokens:issue",
                body=_schema("MintRequest"),
            )
        },
        "/api/v1/vault/tokens/revoke": {
            "post": _operation(
                "revokeToken",
                "Revoke a token by its jti",
                "tokens",
                _responses(
                    {200: _answer("Revoked.", _schema("Revoked"))}, 404, 413, *_AUTHENTICATED
                ),
                needs="tokens:issue",
                body=_schema("RevokeRequest"),
            )
        },
        "/api/v1/vault/tokens/revoke-self": {
            "post": _operation(
                "revokeSelf",
                "Revoke the token that makes the call",
                "tokens",
                _responses({200: _answer("Revoked.", _schema("Revoked"))}, 413, *_AUTHENTICATED),
                body={"type": "object", "description": "Ignored; none is needed."},
                body_required=False,
            )
        },
        "/api/v1/vault/{environment}/{key}": {
            "get": _operation(
                "readSecret",
                "Read one value (uses one of a limited token's uses)",
                "secrets",
                _responses(
                    {200: _answer("The value.", _schema("Secret"), **no_store)},
                    404,
                    405,
                    *_AUTHENTICATED,
                ),
                needs="secrets:read",
                parameters=[_ENVIRONMENT, _KEY, version_param],
            )
        },
        "/api/v1/vault/{environment}": {
            "get": _operation(
                "listKeys",
                "List key names (never values)",
                "secrets",
                _responses(
                    {200: _answer("Key names.", _schema("KeyList"))}, 404, 405, *_AUTHENTICATED
                ),
                needs="secrets:list",
                parameters=[
                    _ENVIRONMENT,
                    _param("pattern", "query", _schema("KeyPattern"), "Default `*`.", False),
                ],
            )
        },
        "/api/v1/vault/{environment}/batch": {
            "post": _operation(
                "batchRead",
                "Read several values by name or pattern (one use)",
                "secrets",
                _responses(
                    {200: _answer("The values.", _schema("BatchValues"), **no_store)},
                    404,
                    405,
                    413,
                    *_AUTHENTICATED,
                ),
                needs="secrets:read (and secrets:list for a pattern)",
                parameters=[_ENVIRONMENT],
                body=_schema("BatchRequest"),
            )
        },
        "/api/v1/history/{environment}/{key}": {
            "get": _operation(
                "keyHistory",
                "The commits that changed a key, newest first",
                "secrets",
                _responses(
                    {200: _answer("Its history.", _schema("History"))}, 404, *_AUTHENTICATED
                ),
                needs="secrets:list",
                parameters=[_ENVIRONMENT, _KEY],
            )
        },
        "/api/v1/audit": {
            "get": _operation(
                "exportAudit",
                "Export audit records as JSONL",
                "audit",
                _responses(
                    {
                        200: {
                            "description": "Matching records, oldest first.",
                            "headers": {
                                "X-Request-Id": _ref("headers", "RequestId"),
                                **no_store,
                            },
                            "content": {"application/x-ndjson": audit_lines},
                        }
                    },
                    *_AUTHENTICATED,
                ),
                needs="audit:read",
                parameters=audit_params,
            )
        },
        "/api/v1/rotation": {
            "get": _operation(
                "rotationCheck",
                "Rotation status of an environment's keys",
                "rotation",
                _responses({200: _answer("Key ages.", _schema("Rotation"))}, 404, *_AUTHENTICATED),
                needs="secrets:list",
                parameters=[
                    _param("environment", "query", _schema("Environment"), "Required.", True)
                ],
            )
        },
        "/api/v1/sync": {
            "post": _operation(
                "syncWebhook",
                "A forge's push webhook: fetch the Git remote now",
                "sync",
                _responses(
                    {
                        200: _answer("The commit now served.", _schema("Synced")),
                        401: _error_response(("signature_invalid",), "Bad or missing signature."),
                        409: _answer(
                            "Refused: the last good commit stays.", _schema("SyncRefusal")
                        ),
                    },
                    404,
                    413,
                    429,
                    503,
                ),
                public=True,
                parameters=[
                    _param(
                        "X-Hub-Signature-256",
                        "header",
                        {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"},
                        "HMAC-SHA256 of the raw body with VANTA_WEBHOOK_SECRET.",
                        True,
                    )
                ],
                body={"description": "The forge's push payload; ignored."},
            )
        },
        "/api/v1/openapi.json": {
            "get": _operation(
                "openapiDocument",
                "This document",
                "meta",
                _responses(
                    {
                        200: {
                            "description": "The OpenAPI document.",
                            "headers": {"X-Request-Id": _ref("headers", "RequestId")},
                            "content": _json({"type": "object", "required": ["openapi"]}),
                        },
                        304: {"description": "Unchanged since the ETag sent."},
                    },
                    429,
                    503,
                ),
                public=True,
            )
        },
    }


def build_document(max_ttl_minutes: int) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this broker (the longest mintable TTL is configured)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Vanta Vault broker",
            "version": "1",
            "summary": "Secrets kept in Git as SOPS files, handed out to bearer tokens.",
            "description": 'Every error answer is `{"error": {"code", "message"}, '
            '"request_id"}` (a refused sync adds `version`); every answer carries '
            "X-Request-Id, the id its audit record has.",
        },
        "tags": [{"name": n} for n in ("tokens", "secrets", "audit", "rotation", "sync", "meta")],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": _components(max_ttl_minutes),
    }


@lru_cache(maxsize=4)
def _rendered(max_ttl_minutes: int) -> tuple[bytes, str]:
    body = orjson.dumps(build_document(max_ttl_minutes))
    return body, hashlib.sha256(body).hexdigest()[:32]


@openapi.get("/openapi.json")
def openapi_document() -> Response:
    """The document; no authentication, no audit record, revalidated by ETag."""
    body, etag = _rendered(parts().config.max_ttl_minutes)
    response = Response(body, mimetype="application/json")
    response.set_etag(etag)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response.make_conditional(request)
