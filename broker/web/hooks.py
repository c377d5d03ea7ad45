"""What runs around every request: its id, the body size, the failed-authentication
throttle and query checks before the view; after it, the audit record (written before the
answer leaves, or the answer becomes a 503), the headers every answer carries, metrics and
the optional access-log line."""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any

from flask import Request, Response, current_app, g, request

from broker.errors import (
    AuditUnavailable,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimited,
    StateUnavailable,
)
from broker.web.answers import error_response
from broker.web.api import MAX_BODY_BYTES, check_query
from broker.web.endpoints import UNDECLARED_EVENT
from broker.web.parts import EXTENSION, Parts

log = logging.getLogger("vanta.broker")

_UNAUDITED = ("/api/v1/openapi.json",)
# WSGI environ key under which the server hands over the verified client certificate's
# subject (RFC 4514, "CN=billing,O=Acme"), whichever server it is.
CLIENT_CERT_KEY = "vanta.client_cert"
HSTS = "max-age=31536000"  # a year: browsers (the dashboard) keep to HTTPS once they saw it


_UNTHROTTLED = ("/healthz", "/readyz")


class _RequestIds:
    """Request ids: 64 random bits per process, then a counter (unique, and no system call
    per request; a forked worker draws its own random part)."""

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(int.from_bytes(os.urandom(4), "big"))

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFFFFFF:016x}"


_request_ids = _RequestIds()


def begin() -> None:
    # The request, g and the app are bound once: each use of Flask's proxies is a lookup.
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    ctx = g._get_current_object()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    ctx.request_id = _request_ids.next()
    ctx.started = time.perf_counter()
    rule = req.url_rule
    view = app.view_functions.get(rule.endpoint) if rule is not None else None
    declared = getattr(view, "declared", None)  # what the route declares (web.endpoints)
    ctx.declared = declared
    ctx.audit = {"event": UNDECLARED_EVENT if declared is None else declared.event}
    environ = req.environ
    if environ.get("CONTENT_LENGTH") and (req.content_length or 0) > MAX_BODY_BYTES:
        raise PayloadTooLarge()  # also where no route reads a body
    path = req.path
    limits = app.extensions[EXTENSION].limits
    if limits is not None and path not in _UNTHROTTLED:
        retry_after = limits.throttled(req.remote_addr or "-")
        if retry_after is not None:
            raise RateLimited(retry_after)
    if req.method in ("HEAD", "OPTIONS") and path.startswith("/api/") and rule is not None:
        # Flask answers these implicitly; a HEAD would count a use and leave no value.
        allowed = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        raise MethodNotAllowed(allow=tuple(allowed))
    if declared is not None and environ.get("QUERY_STRING"):
        check_query(declared.query_names)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def finish(response: Response) -> Response:
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    ctx = g._get_current_object()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    parts: Parts = app.extensions[EXTENSION]
    status = response.status_code
    if status == 401 and parts.limits is not None:
        try:
            parts.limits.note_auth_failure(req.remote_addr or "-")
        except StateUnavailable:
            log.error("could not count a failed authentication")
    path = req.path
    if path.startswith("/api/") and path not in _UNAUDITED:
        response = _write_audit(response, req, ctx, parts)
        status = response.status_code
    request_id = ctx.get("request_id", "")
    headers = response.headers
    headers.add("X-Request-Id", request_id)
    headers.add("Server", "vanta-broker")  # whichever server runs, it names no framework
    if req.environ.get("wsgi.url_scheme") == "https":
        headers.add("Strict-Transport-Security", HSTS)
    rule = req.url_rule.rule if req.url_rule else None
    elapsed = time.perf_counter() - ctx.get("started", time.perf_counter())
    method = req.method
    parts.metrics.count_request(
        rule or "unmatched", method if method in _METHODS else "other", status, elapsed
    )
    if status >= 400 and ctx.get("error_code") == "usage_exhausted":
        parts.metrics.usage_exhausted.inc()
    if app.config["VANTA_ACCESS_LOG"]:
        claims = ctx.get("claims")
        log.info(
            "%s %s %d %.1fms request_id=%s jti=%s",
            method,
            rule or "-",
            status,
            elapsed * 1000,
            request_id,
            claims.jti if claims else "-",
        )
    return response


_RECORD_FIELDS = ("jti", "subject", "environment", "key", "keys", "pattern", "version")


def _write_audit(response: Response, req: Request, ctx: Any, parts: Parts) -> Response:
    """Append this request's audit record; if that fails, no answer but a 503 leaves."""
    fields: dict[str, Any] = ctx.get("audit") or {"event": "request"}
    status = response.status_code
    record = dict.fromkeys(_RECORD_FIELDS)
    # Event-specific fields (minted_jti, revoked_jti, refused_commit, ...) ride along.
    record.update(fields)
    record["event"] = fields.get("event", "request")
    record["request_id"] = ctx.get("request_id")
    record["client_ip"] = req.remote_addr
    record["client_cert"] = req.environ.get(CLIENT_CERT_KEY)
    record["status"] = status
    if status < 400:
        record["outcome"] = "success"
        record["error"] = None
    else:
        record["outcome"] = "denied" if status in (401, 403, 409) else "error"
        record["error"] = ctx.get("error_code")
    try:
        parts.audit.append(record)
    except AuditUnavailable as exc:
        parts.metrics.audit_write_failures.inc()
        _give_back_use(parts)
        log.error("audit record could not be written; answering 503")
        return error_response(exc.status, exc.code, exc.message)
    return response


def _give_back_use(parts: Parts) -> None:
    jti = g.get("used_jti")
    if jti:
        try:
            parts.state.give_back(jti)
        except StateUnavailable:
            log.error("could not give back a use after an audit failure")
