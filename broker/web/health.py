"""Health, readiness and metrics: the endpoints an orchestrator and Prometheus call."""

from __future__ import annotations

import hmac
import os
import subprocess

from flask import Blueprint, Response, request

from broker.config import Config
from broker.errors import ApiError, StateUnavailable, TokenInvalid
from broker.web.api import json_response
from broker.web.parts import parts
from broker.web.responses import BrokerResponse

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Response:
    """Liveness: answers without a token and says nothing else."""
    return json_response({"status": "ok"})


@health.get("/metrics")
def metrics() -> Response:
    """Prometheus text; with VANTA_METRICS_TOKEN set, only for that bearer."""
    wired = parts()
    expected = wired.config.metrics_token
    if expected is not None:
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, b"Bearer " + expected.reveal().encode()):
            raise TokenInvalid()
    body, content_type = wired.metrics.render()
    return BrokerResponse(body, content_type=content_type)


@health.get("/readyz")
def readyz() -> Response:
    """200 when tree, key, audit and state are all usable; else 503 naming what is not."""
    wired = parts()
    checks = {
        "tree": _tree_ready,
        "key": lambda: _key_ready(wired.config),
        "audit": wired.audit.check,
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
        parts().store.served()
    except ApiError:
        return False
    return True


def _state_ready() -> bool:
    try:
        parts().state.ping()
    except StateUnavailable:
        return False
    return True
