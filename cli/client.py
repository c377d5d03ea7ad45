"""The broker's HTTP client: typed results, one exception class per broker error code.

`vanta-cli` uses it, and services import it as the Python SDK (SPEC §12)::

    from cli.client import VaultClient
    vc = VaultClient()                       # VANTA_BROKER_URL, VANTA_TOKEN; or url=, token=
    vc.get("prod", "DATABASE_URL").value
    vc.get_many("prod", pattern="DATABASE_*")

Every request goes through `VaultClient._send`, the one place where the SDK's cache,
retries and circuit breaker will sit. The transport is a `requests.Session` that may be
passed in (a test mounts an adapter over the Flask app; a service shares its pool).

Errors, all importable from here::

    VaultError
     ├── BrokerUnavailable       unreachable, timed out (later: circuit open)
     └── BrokerError             the broker answered with an error body
          ├── BadRequest         bad_request, method_not_allowed, payload_too_large
          ├── TokenInvalid       token_invalid (and signature_invalid)
          ├── Forbidden          any other 403
          │    ├── ScopeDenied        scope_denied
          │    ├── PermissionDenied   permission_denied
          │    ├── UsageExhausted     usage_exhausted
          │    └── TokenRevoked       token_revoked
          ├── NotFound           not_found
          ├── RateLimited        rate_limited (with retry_after)
          └── ServiceUnavailable any other 503
               ├── DecryptFailed      decrypt_failed
               ├── AuditUnavailable   audit_unavailable
               └── StateUnavailable   state_unavailable

Every `BrokerError` carries `status`, `code`, `message` and `request_id`. A code not
known is mapped by its HTTP status (so a newer broker still raises something sensible).
No exception text ever holds a token or a secret value. The classes live in
`cli.client_errors`, the typed results in `cli.client_results`; import both from here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from cli.client_errors import (
    AuditUnavailable,
    BadRequest,
    BrokerError,
    BrokerUnavailable,
    DecryptFailed,
    Forbidden,
    NotFound,
    PermissionDenied,
    RateLimited,
    ScopeDenied,
    ServiceUnavailable,
    StateUnavailable,
    TokenInvalid,
    TokenRevoked,
    UsageExhausted,
    VaultError,
    error_from_response,
)
from cli.client_results import (
    Batch,
    KeyList,
    MintedToken,
    Secret,
    TokenRequest,
    TokenScope,
    Value,
    Version,
)

DEFAULT_BROKER_URL = "http://127.0.0.1:8200"
DEFAULT_TIMEOUT = 5.0

__all__ = [
    "DEFAULT_BROKER_URL",
    "DEFAULT_TIMEOUT",
    "AuditUnavailable",
    "BadRequest",
    "Batch",
    "BrokerError",
    "BrokerUnavailable",
    "DecryptFailed",
    "Forbidden",
    "KeyList",
    "MintedToken",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "ScopeDenied",
    "Secret",
    "ServiceUnavailable",
    "StateUnavailable",
    "TokenInvalid",
    "TokenRequest",
    "TokenRevoked",
    "TokenScope",
    "UsageExhausted",
    "Value",
    "VaultClient",
    "VaultError",
    "Version",
    "error_from_response",
]


# -- the client --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    url: str
    token: str | None
    ca_bundle: str | None
    client_cert: str | tuple[str, str] | None


def _settings(
    url: str | None,
    token: str | None,
    ca_bundle: str | None,
    client_cert: str | tuple[str, str] | None,
    client_key: str | None,
    environ: Mapping[str, str] | None,
) -> _Settings:
    """Fill what the caller left out from the environment; the only place it is read."""
    env = os.environ if environ is None else environ
    url = url or env.get("VANTA_BROKER_URL") or DEFAULT_BROKER_URL
    if token is None:
        token = env.get("VANTA_TOKEN")
    token = (token or "").strip() or None  # "$(cat file)" may keep a stray newline
    ca_bundle = ca_bundle or env.get("VANTA_CA_BUNDLE") or None
    if client_cert is None and env.get("VANTA_CLIENT_CERT"):
        client_cert = env["VANTA_CLIENT_CERT"]
        client_key = client_key or env.get("VANTA_CLIENT_KEY") or None
    if isinstance(client_cert, str) and client_key:
        client_cert = (client_cert, client_key)
    return _Settings(url.rstrip("/"), token, ca_bundle, client_cert)


# `VaultClient.list` shadows the builtin inside the class body, so its annotations use these.
_KeyNames = list[str]
_Versions = list[Version]


class VaultClient:
    """Talks to one broker with one token. Every method raises a `VaultError` on failure.

    `url` and `token` default to VANTA_BROKER_URL and VANTA_TOKEN (read from `environ`,
    default `os.environ`, only when not given). `session` is the transport.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        session: requests.Session | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        ca_bundle: str | None = None,
        client_cert: str | tuple[str, str] | None = None,
        client_key: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        settings = _settings(url, token, ca_bundle, client_cert, client_key, environ)
        self.url = settings.url
        self._token = settings.token
        self._verify: str | bool = settings.ca_bundle or True
        self._cert = settings.client_cert
        self.timeout = timeout
        self.session = session if session is not None else requests.Session()

    def __repr__(self) -> str:
        return f"VaultClient(url={_safe_url(self.url)!r})"

    @property
    def has_token(self) -> bool:
        return self._token is not None

    # -- tokens ---------------------------------------------------------------------------

    def generate_token(self, request: TokenRequest) -> MintedToken:
        """Mint a token inside this client's token (which needs tokens:issue)."""
        response = self._send("POST", "/api/v1/vault/tokens/generate", json=request.to_json())
        return MintedToken.from_answer(_json(response), response.text)

    # -- secrets ---------------------------------------------------------------------------

    def get(self, environment: str, key: str, *, version: str | None = None) -> Secret:
        """One value (uses one of a limited token's uses); `version` is a commit SHA."""
        params = {"version": version} if version is not None else None
        body = _json(self._send("GET", _vault_path(environment, key), params=params))
        return Secret(
            environment=body["environment"],
            key=body["key"],
            value=body["value"],
            version=body.get("version"),
            committed_at=_time(body.get("committed_at")),
        )

    def read_batch(
        self,
        environment: str,
        *,
        keys: Sequence[str] | None = None,
        pattern: str | None = None,
    ) -> Batch:
        """Several values in one request (one use): exactly one of `keys` and `pattern`."""
        if (keys is None) == (pattern is None):
            raise ValueError("pass exactly one of keys and pattern")
        payload = {"keys": list(keys)} if keys is not None else {"pattern": pattern}
        path = f"{_vault_path(environment)}/batch"
        body = _json(self._send("POST", path, json=payload))
        return Batch(body["environment"], dict(body["values"]), body.get("version"))

    def get_many(
        self,
        environment: str,
        *,
        keys: Sequence[str] | None = None,
        pattern: str | None = None,
    ) -> dict[str, Value]:
        """`{key: value}` for `keys`, or for every key matching `pattern`."""
        return dict(self.read_batch(environment, keys=keys, pattern=pattern).values)

    def list_keys(self, environment: str, pattern: str = "*") -> KeyList:
        """Key names (never values) inside the token's pattern that match `pattern`."""
        response = self._send("GET", _vault_path(environment), params={"pattern": pattern})
        body = _json(response)
        return KeyList(body["environment"], tuple(body["keys"]), body.get("version"))

    def history(self, environment: str, key: str) -> _Versions:
        """The commits that changed `key`, newest first."""
        path = f"/api/v1/history/{_segment(environment)}/{_key_path(key)}"
        body = _json(self._send("GET", path))
        return [
            Version(
                version=v["version"],
                committed_at=_time(v.get("committed_at")),
                author=v.get("author", ""),
                message=v.get("message", ""),
                change=v["change"],
            )
            for v in body["versions"]
        ]

    def list(self, environment: str, pattern: str = "*") -> _KeyNames:
        """SPEC §12 shape of `list_keys`: just the names."""
        return list(self.list_keys(environment, pattern).keys)

    # -- the transport ----------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> requests.Response:
        """One request; a 2xx answer or a VaultError. Retries, cache and breaker go here."""
        headers = {"Accept": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            response = self.session.request(
                method,
                self.url + path,
                params=params,
                json=json,
                headers=headers,
                timeout=self.timeout,
                verify=self._verify,
                cert=self._cert,
                allow_redirects=False,  # never carry the bearer token elsewhere
            )
        except requests.Timeout:
            raise BrokerUnavailable(
                f"the broker at {_safe_url(self.url)} did not answer within {self.timeout:g}s"
            ) from None
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
        ):
            raise VaultError(f"invalid broker URL {_safe_url(self.url)!r}") from None
        except requests.exceptions.InvalidHeader:
            # requests' own message quotes the header, i.e. the token: never pass it on
            raise VaultError("the token holds characters a bearer token cannot have") from None
        except requests.RequestException as exc:
            raise BrokerUnavailable(
                f"cannot reach the broker at {_safe_url(self.url)}: {_reason(exc)}"
            ) from None
        if not 200 <= response.status_code < 300:
            raise error_from_response(response)
        return response


def _time(raw: object) -> datetime | None:
    return datetime.fromisoformat(raw) if isinstance(raw, str) else None


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise BrokerError(
            response.status_code,
            "invalid_response",
            "the answer is not JSON: is this URL a Vanta broker?",
            response.headers.get("X-Request-Id") or None,
        ) from None


def _segment(text: str) -> str:
    """One URL path segment. '.' and '..' are refused before sending: every HTTP stack
    on the way (requests, urllib3) would resolve them, silently asking for another URL."""
    if text in (".", ".."):
        raise BadRequest(400, "bad_request", f"a name cannot be {text!r}", None)
    return quote(text, safe="")


def _key_path(key: str) -> str:
    return "/".join(_segment(part) for part in key.split("/"))


def _vault_path(environment: str, key: str | None = None) -> str:
    path = f"/api/v1/vault/{_segment(environment)}"
    return path if key is None else f"{path}/{_key_path(key)}"


def _safe_url(url: str) -> str:
    """The URL without user:password@ (it may carry credentials)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _reason(exc: BaseException) -> str:
    """A short reason ('connection refused') from requests' nested connection errors."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror.lower()
        stack.extend(a for a in current.args if isinstance(a, BaseException))
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                stack.append(linked)
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed"
    return type(exc).__name__
