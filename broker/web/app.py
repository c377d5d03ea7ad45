"""The application factory: builds the parts from the configuration and wires them into
Flask (blueprints, hooks, error answers). Nothing else happens here."""

from __future__ import annotations

from flask import Flask

from broker.audit.log import AuditLog
from broker.config import Config
from broker.state import open_rate_limits, open_token_state
from broker.state.sqlite import TokenState
from broker.store.remote import Poller, RemoteMirror, RemoteTree
from broker.store.sops import Decryptor
from broker.store.tree import SecretStore
from broker.tokens.verified import VerifiedTokens
from broker.ui import ui
from broker.web import answers, hooks
from broker.web.admin_api import admin
from broker.web.api import api
from broker.web.health import health
from broker.web.metrics import Metrics
from broker.web.openapi import openapi
from broker.web.parts import EXTENSION, Parts
from broker.web.proxies import TrustedProxies
from broker.web.responses import BrokerFlask
from broker.web.rotation_api import rotation_api
from broker.web.sync_api import note_sync, sync


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
    app.config["MAX_CONTENT_LENGTH"] = hooks.MAX_BODY_BYTES
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
    app.extensions[EXTENSION] = parts
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
    app.register_blueprint(health)
    answers.register(app)
    app.before_request(hooks.begin)
    app.after_request(hooks.finish)
    return app


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
