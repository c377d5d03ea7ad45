"""The broker's wired parts, and the one typed way to reach them from a request."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import current_app

from broker.audit.log import AuditLog
from broker.config import Config
from broker.state.ratelimit import RateLimits
from broker.state.sqlite import TokenState
from broker.store.remote import Poller, RemoteMirror
from broker.store.tree import SecretStore
from broker.tokens.verified import VerifiedTokens
from broker.web.metrics import Metrics

EXTENSION = "vanta"


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


def parts() -> Parts:
    """The parts of the app handling this request (set by create_app)."""
    found: Parts = current_app.extensions[EXTENSION]
    return found
