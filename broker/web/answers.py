"""Every error becomes one answer shape here: the broker's own errors, Werkzeug's (routing,
methods, sizes: mapped onto the same tree first), and anything unexpected (logged without
its text, answered as a bare 500)."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import orjson
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from broker import errors
from broker.web.responses import BrokerResponse

log = logging.getLogger("vanta.broker")


def register(app: Flask) -> None:
    app.register_error_handler(errors.ApiError, api_error)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, unexpected_error)


def error_response(
    status: int, code: str, message: str, extra: dict[str, Any] | None = None
) -> Response:
    g.error_code = code
    body = {
        "error": {"code": code, "message": message},
        **(extra or {}),
        "request_id": getattr(g, "request_id", None),
    }
    return BrokerResponse(orjson.dumps(body), status=status, mimetype="application/json")


def api_error(exc: errors.ApiError) -> Response:
    response = error_response(exc.status, exc.code, exc.message, exc.extra())
    response.headers.update(exc.headers())
    return response


# What Werkzeug raises itself (routing, methods, sizes, unreadable input), as the broker's
# own errors; any other 4xx is a bad request with its status kept.
_WERKZEUG: dict[int, tuple[type[errors.ApiError], str]] = {
    400: (errors.BadRequest, "malformed request"),
    401: (errors.TokenInvalid, errors.TokenInvalid.default_message),
    403: (errors.PermissionDenied, errors.PermissionDenied.default_message),
    404: (errors.NotFound, "no such endpoint"),
    405: (errors.MethodNotAllowed, "method not allowed"),
    413: (errors.PayloadTooLarge, "request body over 1 MiB"),
}


def http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    kind, message = _WERKZEUG.get(
        status, (errors.BadRequest, "malformed request") if status < 500 else (errors.ApiError, "")
    )
    if kind is errors.MethodNotAllowed:
        methods = list(getattr(exc, "valid_methods", None) or ())
        if request.path.startswith("/api/"):  # HEAD and OPTIONS are refused there
            methods = [m for m in methods if m not in ("HEAD", "OPTIONS")]
        error: errors.ApiError = errors.MethodNotAllowed(message, allow=tuple(methods))
    else:
        error = kind(message or None)
    error.status = status
    return api_error(error)


def unexpected_error(exc: Exception) -> Response:
    # Log where it broke, never the exception's text (it may quote a value).
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unexpected %s in request %s\n%s", type(exc).__name__, g.get("request_id"), frames)
    return error_response(500, "internal_error", "internal error")
