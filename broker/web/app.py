"""The application factory: wires config, store, token state and audit into Flask."""

from __future__ import annotations

import hmac
import itertools
import logging
import os
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import orjson
from flask import Flask, Request, Response, current_app, g, request
from limits.storage import Storage
from werkzeug.exceptions import HTTPException

from broker.audit.log import AuditLog
from broker.config import Config
from broker.errors import (
    ApiError,
    AuditUnavailable,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimited,
    StateUnavailable,
    TokenInvalid,
)
from broker.state.counters import SharedCounters, counters_path
from broker.state.ratelimit import RateLimits, SqliteLimitStorage, parse_rate
from broker.state.sqlite import SqliteTokenState, TokenState
from broker.store.remote import Poller, RemoteMirror, RemoteTree
from broker.store.sops import Decryptor
from broker.store.tree import SecretStore
from broker.tokens.verified import VerifiedTokens
from broker.ui import ui
from broker.web.admin_api import admin
from broker.web.api import api, check_query, json_response
from broker.web.metrics import Metrics
from broker.web.openapi import openapi
from broker.web.proxies import TrustedProxies
from broker.web.responses import BrokerFlask, BrokerResponse
from broker.web.rotation_api import rotation_api
from broker.web.sync_api import note_sync, sync

log = logging.getLogger("vanta.broker")

MAX_BODY_BYTES = 1024 * 1024
_HTTP_CODES = {
    400: "bad_request",
    401: "token_invalid",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}
_UNAUDITED = ("/api/v1/openapi.json",)
# WSGI environ key under which the server hands over the verified client certificate's
# subject (RFC 4514, "CN=billing,O=Acme"), whichever server it is.
CLIENT_CERT_KEY = "vanta.client_cert"
HSTS = "max-age=31536000"  # a year: browsers (the dashboard) keep to HTTPS once they saw it


@dataclass
class Parts:
    config: Config
    store: SecretStore
    state: TokenState
    audit: AuditLog
    metrics: Metrics = field(default_factory=Metrics)
    limits: RateLimits | None = None
    tokens: VerifiedTokens | None = None
    mirror: RemoteMirror | None = None
    poller: Poller | None = None  # following the remote on an interval


def create_app(
    config: Config,
    *,
    store: SecretStore | None = None,
    state: TokenState | None = None,
    audit_log: AuditLog | None = None,
    background: bool = True,
    access_log: bool = False,
) -> Flask:
    """Build the broker. Components may be passed in (tests); otherwise built from config.
    `background` starts the Git remote poller (when configured); `access_log` logs a line
    per request."""
    app = BrokerFlask("vanta-broker")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.url_map.merge_slashes = False  # '//' is a 404, not an HTML redirect
    metrics = Metrics()
    decryptor = Decryptor(
        config.sops_bin,
        cache=config.decrypt_cache,
        age_key_file=str(config.sops_age_key_file) if config.sops_age_key_file else None,
        age_key=config.sops_age_key.reveal() if config.sops_age_key else None,
        on_decrypt=metrics.decrypts.inc,
        on_cache_hit=metrics.decrypt_cache_hits.inc,
    )
    mirror = None
    if store is None and config.git_remote is not None:
        mirror = RemoteMirror(
            config.git_remote.reveal(),
            config.git_branch,
            config.git_cache,
            config.git_allowed_signers,
        )
        store = SecretStore(RemoteTree(mirror, config.sops_files_path.as_posix()), decryptor)
    parts = Parts(
        config=config,
        store=store or SecretStore.open(config.sops_files_path, config.git_ref, decryptor),
        state=state or open_token_state(config),
        audit=audit_log
        or AuditLog(config.audit_log, fsync=config.audit_fsync, max_bytes=config.audit_max_bytes),
        mirror=mirror,
        metrics=metrics,
    )
    parts.limits = open_rate_limits(config, parts.state)
    parts.tokens = VerifiedTokens(
        config.keyring,
        issuer=config.jwt_issuer,
        audience=config.jwt_audience,
        max_ttl_minutes=config.max_ttl_minutes,
    )
    app.extensions["vanta"] = parts
    app.config["VANTA_ACCESS_LOG"] = access_log
    if config.trusted_proxies:
        # The client address is the one N trusted proxies put in X-Forwarded-For.
        app.wsgi_app = TrustedProxies(  # type: ignore[method-assign]
            app.wsgi_app, config.trusted_proxies, config.trusted_proxy_networks
        )
    if mirror is not None:
        _start_following(parts, background)
    app.register_blueprint(openapi)
    app.register_blueprint(admin)
    app.register_blueprint(sync)
    app.register_blueprint(rotation_api)
    app.register_blueprint(api)
    app.register_blueprint(ui)
    app.add_url_rule("/healthz", "healthz", lambda: json_response({"status": "ok"}))
    app.add_url_rule("/readyz", "readyz", _readyz)
    app.add_url_rule("/metrics", "metrics", _metrics)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.before_request(_begin)
    app.after_request(_finish)
    return app


def _metrics() -> Response:
    """Prometheus text; with VANTA_METRICS_TOKEN set, only for that bearer."""
    parts = g_parts()
    expected = parts.config.metrics_token
    if expected is not None:
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, b"Bearer " + expected.reveal().encode()):
            raise TokenInvalid()
    body, content_type = parts.metrics.render()
    return BrokerResponse(body, content_type=content_type)


def _readyz() -> Response:
    """200 when tree, key, audit and state are all usable; else 503 naming what is not."""
    parts = g_parts()
    checks = {
        "tree": _tree_ready,
        "key": lambda: _key_ready(parts.config),
        "audit": parts.audit.check,
        "state": _state_ready,
    }
    failing = [name for name, check in checks.items() if not check()]
    if failing:
        return json_response({"status": "unready", "failing": failing}, status=503)
    return json_response({"status": "ready"})


_sops_runs: set[str] = set()


def _key_ready(config: Config) -> bool:
    """The sops binary runs (checked once per process) and the age key file is readable."""
    if config.sops_bin not in _sops_runs:
        try:
            proc = subprocess.run(
                [config.sops_bin, "--disable-version-check", "--version"],
                capture_output=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        if proc.returncode != 0:
            return False
        _sops_runs.add(config.sops_bin)
    key_file = config.sops_age_key_file
    return key_file is None or os.access(key_file, os.R_OK)


def _tree_ready() -> bool:
    try:
        g_parts().store.served()
    except ApiError:
        return False
    return True


def _state_ready() -> bool:
    try:
        g_parts().state.ping()
    except StateUnavailable:
        return False
    return True


def _start_following(parts: Parts, background: bool) -> None:
    """Fetch once at start-up; then poll on the interval (0: only on the webhook)."""
    mirror = parts.mirror
    assert mirror is not None
    outcome = mirror.sync()
    if outcome is not None:
        note_sync(parts, outcome, from_poll=True)
    if background and parts.config.git_poll_seconds > 0:
        parts.poller = Poller(
            mirror,
            parts.config.git_poll_seconds,
            lambda outcome: note_sync(parts, outcome, from_poll=True),
        )
        parts.poller.start()


def open_rate_limits(config: Config, state: TokenState | None = None) -> RateLimits:
    """Counters every worker (SQLite) or every broker (Redis) shares; in the SQLite file
    of `state`, through its connections."""
    counters = None
    if config.state_url is not None:
        from limits.storage import RedisStorage

        storage: Storage = RedisStorage(config.state_url.reveal())
    elif isinstance(state, SqliteTokenState) and state.path == config.state_db:
        storage = SqliteLimitStorage(config.state_db, connect=state.connection)
        counters = state.counters
    else:
        storage = SqliteLimitStorage(config.state_db)
        counters = SharedCounters(counters_path(config.state_db))
    per_token = parse_rate(config.rate_limit) if config.rate_limit else None
    return RateLimits(storage, per_token, config.auth_failures_per_minute, counters)


def open_token_state(config: Config) -> TokenState:
    """Redis when VANTA_STATE_URL is set (several brokers), else the SQLite file."""
    if config.state_url is not None:
        from broker.state.redis import RedisTokenState

        return RedisTokenState(config.state_url.reveal())
    return SqliteTokenState(config.state_db)


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


def _api_error(exc: ApiError) -> Response:
    response = error_response(exc.status, exc.code, exc.message, exc.extra())
    response.headers.update(exc.headers())
    return response


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = _HTTP_CODES.get(status, "bad_request" if status < 500 else "internal_error")
    messages = {
        404: "no such endpoint",
        405: "method not allowed",
        413: "request body over 1 MiB",
    }
    response = error_response(status, code, messages.get(status, "malformed request"))
    if status == 405 and getattr(exc, "valid_methods", None):
        methods = exc.valid_methods  # type: ignore[attr-defined]
        if request.path.startswith("/api/"):  # HEAD and OPTIONS are refused there
            methods = [m for m in methods if m not in ("HEAD", "OPTIONS")]
        response.headers["Allow"] = ", ".join(methods)
    return response


def _unexpected_error(exc: Exception) -> Response:
    # Log where it broke, never the exception's text (it may quote a value).
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unexpected %s in request %s\n%s", type(exc).__name__, g.get("request_id"), frames)
    return error_response(500, "internal_error", "internal error")


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


def _begin() -> None:
    # The request, g and the app are bound once: each use of Flask's proxies is a lookup.
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    ctx = g._get_current_object()  # type: ignore[attr-defined]
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    ctx.request_id = _request_ids.next()
    ctx.started = time.perf_counter()
    rule = req.url_rule
    view = app.view_functions.get(rule.endpoint) if rule is not None else None
    ctx.audit = {"event": getattr(view, "audit_event", "request")}
    environ = req.environ
    if environ.get("CONTENT_LENGTH") and (req.content_length or 0) > MAX_BODY_BYTES:
        raise PayloadTooLarge()  # also where no route reads a body
    path = req.path
    limits = app.extensions["vanta"].limits
    if limits is not None and path not in _UNTHROTTLED:
        retry_after = limits.throttled(req.remote_addr or "-")
        if retry_after is not None:
            raise RateLimited(retry_after)
    if req.method in ("HEAD", "OPTIONS") and path.startswith("/api/") and rule is not None:
        # Flask answers these implicitly; a HEAD would count a use and leave no value.
        allowed = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        raise MethodNotAllowed(allow=tuple(allowed))
    if environ.get("QUERY_STRING"):
        allowed_query = getattr(view, "query_params", None)
        if allowed_query is not None:
            check_query(allowed_query)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _finish(response: Response) -> Response:
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    ctx = g._get_current_object()  # type: ignore[attr-defined]
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    parts: Parts = app.extensions["vanta"]
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


def g_parts() -> Parts:
    from flask import current_app

    return current_app.extensions["vanta"]
