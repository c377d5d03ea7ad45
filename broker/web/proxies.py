"""The client's address behind trusted proxies.

A peer inside the trusted networks may say, in X-Forwarded-For, whom it forwards for;
with N trusted proxies in front, the client is the Nth address from the right. Anyone
else's X-Forwarded-For is ignored, and so is a value that is not an IP address: the
address the throttle counts and the audit records is always a peer's or a proxy's word,
and always an IP address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from broker.config import Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def forwarded_client(forwarded: str | None, hops: int) -> str | None:
    """The address `hops` trusted proxies put in X-Forwarded-For, if it is an IP address."""
    if not forwarded:
        return None
    values = forwarded.split(",")
    if len(values) < hops:
        return None
    address = _address(values[-hops])
    return None if address is None else str(address)


class TrustedProxies:
    """WSGI middleware: REMOTE_ADDR (and the scheme) as trusted proxies report them."""

    def __init__(
        self, app: Callable[..., Iterable[bytes]], hops: int, networks: tuple[Network, ...]
    ) -> None:
        self.app = app
        self.hops = hops
        self.networks = networks

    def trusted(self, peer: str) -> bool:
        address = _address(peer)
        return address is not None and any(address in network for network in self.networks)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if self.trusted(environ.get("REMOTE_ADDR", "")):
            client = forwarded_client(environ.get("HTTP_X_FORWARDED_FOR"), self.hops)
            if client is not None:
                environ["REMOTE_ADDR"] = client
            protos = environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")
            proto = protos[-self.hops].strip().lower() if len(protos) >= self.hops else ""
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto
        return self.app(environ, start_response)
