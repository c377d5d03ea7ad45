"""GET /api/v1/openapi.json: the OpenAPI 3.1 document of every /api/v1 endpoint.

Nothing in it is typed twice: the paths come from what each route declares (its method,
event, permission, query parameters and answers: broker.web.endpoints), the error codes
from the error tree, the name patterns from broker.scope. What is written here is the
shape of the bodies. `tests/test_schemathesis.py` holds a running broker to it.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Any

import orjson
from flask import Blueprint, Response, request

from broker import scope as names
from broker.errors import SyncRefused, error_classes
from broker.web import admin_api, api, rotation_api, sync_api  # noqa: F401 (their ROUTES)
from broker.web.endpoints import (
    ROUTES,
    UNDECLARED_EVENT,
    Answer,
    Endpoint,
    Param,
    Schema,
    ref,
    route,
    schema,
)
from broker.web.parts import parts

openapi = Blueprint("openapi", __name__, url_prefix="/api/v1")

# The error answers every route shares, by status: their component's name and meaning.
# Which codes each carries comes from the error tree (broker.errors); errors that only one
# route gives (its `own_errors`) are documented with that route instead.
_SHARED_ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Malformed input; the message names the field."),
    401: ("Unauthorized", "Bearer token missing or invalid (generic)."),
    403: ("Forbidden", "Outside the token's scope, permission missing, usage used up, or revoked."),
    404: ("NotFound", "Not found (only said for names inside the scope)."),
    405: ("MethodNotAllowed", "The path names a reserved resource."),
    413: ("PayloadTooLarge", "Request body over 1 MiB."),
    429: ("TooManyRequests", "Rate limited; retry after Retry-After seconds."),
    503: (
        "Unavailable",
        "Decryption, audit, state store or served tree unavailable, or a secrets file that "
        "is not served (YAML anchors or aliases, or too large); nothing secret left.",
    ),
}
_AUTHENTICATED = (400, 401, 403, 429, 503)  # what any bearer-token route may answer


def error_codes() -> tuple[str, ...]:
    """Every code an error answer can carry."""
    return tuple(dict.fromkeys(code for error in error_classes() for code in error.codes()))


def audit_events() -> tuple[str, ...]:
    """Every event an audit record can name: the routes' own, and that of the rest."""
    return tuple(dict.fromkeys([*(r.declared.event for r in ROUTES), UNDECLARED_EVENT]))


def _shared_codes(status: int) -> tuple[str, ...]:
    own = {error for r in ROUTES for error in r.declared.own_errors}
    return tuple(
        dict.fromkeys(
            code
            for error in error_classes()
            if error.status == status and not any(issubclass(error, o) for o in own)
            for code in error.codes()
        )
    )


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
        "headers": {"X-Request-Id": ref("headers", "RequestId"), **headers},
        "content": _json(schema),
    }


def _parameter(param: Param) -> Schema:
    return {
        "name": param.name,
        "in": param.where,
        "required": param.required,
        "description": param.description,
        "schema": param.schema,
    }


# The path parameters of the routes, by the name their rules give them.
_PATH_PARAMS = {
    "environment": Param("environment", schema("Environment"), "Environment name.", True, "path"),
    "key": Param(
        "key", schema("Key"), "Key path, `/` between segments (`API_KEYS/openai`).", True, "path"
    ),
}
_RULE_PARAM = re.compile(r"<(?:\w+:)?(\w+)>")


def _schemas(max_ttl_minutes: int) -> dict[str, Schema]:
    version = schema("Version")
    time = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC."}
    printable = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    error_body = _object(
        {
            "error": _object(
                {
                    "code": {"type": "string", "enum": list(error_codes())},
                    "message": {"type": "string"},
                }
            ),
            "request_id": {"type": "string"},
        }
    )
    scope_details = _object(
        {
            "subject": {"type": "string"},
            "environment": schema("EnvironmentOrAll"),
            "key_pattern": schema("KeyPattern"),
            "permissions": {"type": "array", "items": schema("Permission"), "minItems": 1},
            "usage_limit": {"type": ["integer", "null"], "minimum": 1},
            "jti": {"type": "string"},
            "expires_at": time,
        }
    )
    rotation_key = _object(
        {
            "environment": schema("Environment"),
            "key": schema("Key"),
            "last_changed": {"type": "string", "pattern": "^[0-9a-f]{40}$"},
            "changed_at": time,
            "age_days": {"type": "integer"},
            "max_age_days": {"type": "integer"},
            "status": {"type": "string", "enum": ["ok", "due", "overdue"]},
        }
    )
    nullable_text = {"type": ["string", "null"]}
    segment = names.KEY_SEGMENT_RE.pattern
    schemas: dict[str, Schema] = {
        "Environment": {
            "type": "string",
            "pattern": f"^{names.ENVIRONMENT_RE.pattern}$",
            "not": {"enum": sorted(names.RESERVED_ENVIRONMENTS)},
            "examples": ["prod"],
            "description": "`tokens` is reserved for the token endpoints.",
        },
        "EnvironmentOrAll": {"anyOf": [schema("Environment"), {"const": "*"}]},
        "Key": {
            "type": "string",
            "minLength": 1,
            "maxLength": names.MAX_KEY_LENGTH,
            "pattern": f"^{segment}(/{segment})*$",
            "examples": ["DATABASE_URL"],
        },
        "KeyPattern": {
            "type": "string",
            "minLength": 1,
            "maxLength": names.MAX_KEY_LENGTH,
            "pattern": f"^{names.PATTERN_RE.pattern}$",
            "examples": ["DATABASE_*"],
            "description": "Glob over keys: `*` any run (`/` included), `?` one character.",
        },
        "Permission": {"type": "string", "enum": list(names.PERMISSIONS)},
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
                        "code": {"enum": list(SyncRefused.codes())},
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
                "environment": schema("EnvironmentOrAll"),
                "key_pattern": schema("KeyPattern"),
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
                    "items": schema("Permission"),
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
                "environment": schema("Environment"),
                "key": schema("Key"),
                "value": schema("Value"),
                "version": version,
                "committed_at": {**time, "type": ["string", "null"]},
            }
        ),
        "KeyList": _object(
            {
                "environment": schema("Environment"),
                "keys": {"type": "array", "items": schema("Key")},
                "version": version,
            }
        ),
        "BatchRequest": {
            "oneOf": [
                _object(
                    {
                        "keys": {
                            "type": "array",
                            "items": schema("Key"),
                            "minItems": 1,
                            "maxItems": 1000,
                        }
                    }
                ),
                _object({"pattern": schema("KeyPattern")}),
            ]
        },
        "BatchValues": _object(
            {
                "environment": schema("Environment"),
                "values": {
                    "type": "object",
                    "propertyNames": schema("Key"),
                    "additionalProperties": schema("Value"),
                },
                "version": version,
            }
        ),
        "History": _object(
            {
                "environment": schema("Environment"),
                "key": schema("Key"),
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
                "environment": schema("Environment"),
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
                "event": {"enum": list(audit_events())},
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
    return _answer(description, {"allOf": [schema("Error"), code_is]}, **headers)


def _components(max_ttl_minutes: int) -> Schema:
    retry_after = {
        "required": True,
        "description": "Whole seconds to wait.",
        "schema": {"type": "integer", "minimum": 0},
    }
    responses = {
        name: _error_response(
            _shared_codes(status),
            description,
            **({"Retry-After": retry_after} if status == 429 else {}),
        )
        for status, (name, description) in _SHARED_ERRORS.items()
    }
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


def _success(answer: Answer) -> Schema:
    if answer.body is None:
        return {"description": answer.description}
    headers = {"X-Request-Id": ref("headers", "RequestId")}
    if answer.secret:
        headers["Cache-Control"] = ref("headers", "NoStore")
    return {
        "description": answer.description,
        "headers": headers,
        "content": {answer.media: {"schema": answer.body}},
    }


def _operation(declared: Endpoint, path_params: list[str]) -> Schema:
    """One operation, from what its route declares."""
    operation: Schema = {
        "operationId": declared.operation_id,
        "summary": declared.summary,
        "tags": [declared.tag],
    }
    if declared.public:
        operation["security"] = []
    if declared.permission:
        operation["description"] = (
            f"Needs a bearer token with `{declared.permission}`{declared.permission_note}."
        )
    parameters = [_PATH_PARAMS[name] for name in path_params]
    parameters += [*(declared.query or ()), *declared.headers]
    if parameters:
        operation["parameters"] = [_parameter(p) for p in parameters]
    if declared.body is not None:
        operation["requestBody"] = {
            "required": declared.body_required,
            "content": {"application/json": {"schema": declared.body}},
        }
    responses = {str(status): _success(answer) for status, answer in declared.answers.items()}
    for error in declared.own_errors:
        if str(error.status) not in responses:
            responses[str(error.status)] = _error_response(
                error.codes(), error.default_message.capitalize() + "."
            )
    shared = set(declared.errors) | (set() if declared.public else set(_AUTHENTICATED))
    for status in sorted(shared):
        if str(status) not in responses:
            responses[str(status)] = ref("responses", _SHARED_ERRORS[status][0])
    operation["responses"] = dict(sorted(responses.items()))
    return operation


def _paths() -> dict[str, Schema]:
    paths: dict[str, Schema] = {}
    for route_ in ROUTES:
        path = _RULE_PARAM.sub(r"{\1}", route_.path)
        params = _RULE_PARAM.findall(route_.path)
        paths.setdefault(path, {})[route_.declared.method.lower()] = _operation(
            route_.declared, params
        )
    return paths


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
        "tags": [{"name": tag} for tag in dict.fromkeys(r.declared.tag for r in ROUTES)],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": _components(max_ttl_minutes),
    }


@lru_cache(maxsize=4)
def _rendered(max_ttl_minutes: int) -> tuple[bytes, str]:
    body = orjson.dumps(build_document(max_ttl_minutes))
    return body, hashlib.sha256(body).hexdigest()[:32]


@route(
    openapi,
    Endpoint(
        "GET",
        "/openapi.json",
        "openapiDocument",
        "This document",
        "meta",
        {
            200: Answer("The OpenAPI document.", {"type": "object", "required": ["openapi"]}),
            304: Answer("Unchanged since the ETag sent."),
        },
        query=None,
        errors=(429, 503),
        public=True,
    ),
)
def openapi_document() -> Response:
    """The document; no authentication, no audit record, revalidated by ETag."""
    body, etag = _rendered(parts().config.max_ttl_minutes)
    response = Response(body, mimetype="application/json")
    response.set_etag(etag)
    response.headers["Cache-Control"] = "public, max-age=300"
    response.make_conditional(request)  # turns it into a 304 in place when unchanged
    return response
