"""Where `cli.client.VaultClient` finds its broker, token and TLS settings: the
arguments given, else the environment. The only place it is read.

TLS: `ca_bundle` (else VANTA_CA_BUNDLE, which wins over REQUESTS_CA_BUNDLE and
CURL_CA_BUNDLE; without any, requests' own rules apply); `client_cert` (else
VANTA_CLIENT_CERT) is a PEM path holding the certificate, or certificate and key, or a
(cert, key) tuple; `client_key` (else VANTA_CLIENT_KEY) names the key file when the
certificate file does not hold it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from cli.client._errors import VaultError

DEFAULT_BROKER_URL = "http://127.0.0.1:8200"

ClientCert = str | tuple[str, str]


@dataclass(frozen=True)
class Settings:
    url: str
    token: str | None = field(repr=False)
    ca_bundle: str | None
    client_cert: ClientCert | None

    @property
    def verify(self) -> str | bool:
        """What requests takes as `verify`: a path given wins over its own variables."""
        return self.ca_bundle or True


def resolve(
    url: str | None,
    token: str | None,
    ca_bundle: str | None,
    client_cert: ClientCert | None,
    client_key: str | None,
    environ: Mapping[str, str] | None,
) -> Settings:
    """Fill what the caller left out from `environ` (default os.environ).

    Raises VaultError for a key without a certificate, or a key beside a (cert, key)."""
    env = os.environ if environ is None else environ
    url = url or env.get("VANTA_BROKER_URL") or DEFAULT_BROKER_URL
    if token is None:
        token = env.get("VANTA_TOKEN")
    token = (token or "").strip() or None  # "$(cat file)" may keep a stray newline
    ca_bundle = ca_bundle or env.get("VANTA_CA_BUNDLE") or None
    if client_cert is None:
        client_cert = env.get("VANTA_CLIENT_CERT") or None
        client_key = client_key or env.get("VANTA_CLIENT_KEY") or None
    if client_key and client_cert is None:
        raise VaultError("a client key (VANTA_CLIENT_KEY) needs a certificate (VANTA_CLIENT_CERT)")
    if isinstance(client_cert, tuple):
        if client_key:
            raise VaultError("client_key cannot be given beside a (cert, key) tuple")
        cert, key = client_cert
        client_cert = (str(cert), str(key))
    elif client_cert is not None:
        client_cert = (str(client_cert), client_key) if client_key else str(client_cert)
    return Settings(url.rstrip("/"), token, ca_bundle, client_cert)


def safe_url(url: str) -> str:
    """The URL without user:password@ (it may carry credentials)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
