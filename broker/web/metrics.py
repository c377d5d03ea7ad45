"""Prometheus metrics, summed across gunicorn workers.

Under `vanta-broker serve`, PROMETHEUS_MULTIPROC_DIR is set before any worker starts, so
every worker writes its counters to files there and `/metrics` adds them up. In-process
(tests, `flask run`) the metrics live in this object's own registry. No label holds a
key name, subject or token: `endpoint` is the Flask URL rule.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

disable_created_metrics()  # no *_created series: they are noise for counters

SYNC_RESULTS = ("success", "refused", "failed")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        reg = self.registry
        self.requests = Counter(
            "vanta_requests_total",
            "HTTP requests answered",
            ["endpoint", "method", "status"],
            registry=reg,
        )
        self.duration = Histogram(
            "vanta_request_duration_seconds",
            "Time to answer a request",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=reg,
        )
        self.decrypts = Counter("vanta_decrypt", "sops decryptions run", registry=reg)
        self.decrypt_cache_hits = Counter(
            "vanta_decrypt_cache_hits",
            "Reads answered from the decrypted-document cache",
            registry=reg,
        )
        self.usage_exhausted = Counter(
            "vanta_usage_exhausted",
            "Reads refused because a usage limit was used up",
            registry=reg,
        )
        self.audit_write_failures = Counter(
            "vanta_audit_write_failures",
            "Audit records that could not be written",
            registry=reg,
        )
        self.git_sync = Counter(
            "vanta_git_sync",
            "Git remote syncs by result",
            ["result"],
            registry=reg,
        )
        for result in SYNC_RESULTS:
            self.git_sync.labels(result=result)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def count_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """One answered request: its count by endpoint, method and status, and its time."""
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:  # labels() validates and locks: once per label set, not per request
            children = (
                self.requests.labels(endpoint, method, str(status)),
                self.duration.labels(endpoint),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
