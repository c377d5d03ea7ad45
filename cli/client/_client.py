"""VaultClient: the requests it sends, and what it does around them (cache, single flight,
retries, circuit breaker). Its public names are exported by `cli.client`."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import requests

from cli.client._aws import check_stage, group_secret_value, secret_value, split_secret_id
from cli.client._breaker import CircuitBreaker
from cli.client._cache import AnswerCache
from cli.client._errors import (
    BadRequest,
    BrokerError,
    Forbidden,
    NotFound,
)
from cli.client._results import (
    Batch,
    KeyList,
    MintedToken,
    Secret,
    TokenRequest,
    Value,
    Version,
)
from cli.client._retry import RetryPolicy
from cli.client._settings import ClientCert, resolve, safe_url
from cli.client._transport import Transport

DEFAULT_TIMEOUT = 5.0
DEFAULT_CACHE_TTL = 60.0
DEFAULT_MAX_STALE = 300.0
DEFAULT_RETRIES = 3
DEFAULT_BREAKER_THRESHOLD = 5
DEFAULT_BREAKER_COOLDOWN = 30.0


# `VaultClient.list` shadows the builtin inside the class body, so its annotations use these.
_KeyNames = list[str]
_Versions = list[Version]


class VaultClient:
    """Talks to one broker with one token. Every method raises a `VaultError` on failure.

    `url` and `token` default to VANTA_BROKER_URL and VANTA_TOKEN, the TLS settings to
    VANTA_CA_BUNDLE, VANTA_CLIENT_CERT and VANTA_CLIENT_KEY (read from `environ`, default
    `os.environ`, only when not given). `session` is the transport.

    `timeout` bounds each attempt; `cache_ttl` is how long an answer is served from
    memory (0: no cache); `max_stale` how old a cached answer may be when it is served
    because the broker fails; `retries` how many attempts follow the first (waits drawn
    from 0 to min(`backoff_max`, `backoff` * 2**n)); after `breaker_threshold` failed
    calls in a row (0: never) calls fail fast for `breaker_cooldown` seconds. `clock`
    (seconds, only ever compared) times the cache and the breaker; a test may pass its own.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        session: requests.Session | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        max_stale: float = DEFAULT_MAX_STALE,
        retries: int = DEFAULT_RETRIES,
        backoff: float = 0.2,
        backoff_max: float = 5.0,
        breaker_threshold: int = DEFAULT_BREAKER_THRESHOLD,
        breaker_cooldown: float = DEFAULT_BREAKER_COOLDOWN,
        ca_bundle: str | None = None,
        client_cert: ClientCert | None = None,
        client_key: str | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache: AnswerCache[requests.Response] = AnswerCache(cache_ttl, max_stale, clock)
        self._transport = Transport(
            resolve(url, token, ca_bundle, client_cert, client_key, environ),
            session=session,
            timeout=timeout,
            retry=RetryPolicy(retries, backoff, backoff_max),
            cache=self._cache,
            breaker=CircuitBreaker(breaker_threshold, breaker_cooldown, clock),
        )
        self.url = self._transport.url
        self.session = self._transport.session
        self._groups: set[tuple[str, str]] = set()  # SecretIds found to be groups of keys

    def __repr__(self) -> str:
        return f"VaultClient(url={safe_url(self.url)!r})"

    def __enter__(self) -> VaultClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool, if this client made it."""
        if self._transport.owns_session:
            self.session.close()

    @property
    def has_token(self) -> bool:
        return self._transport.has_token

    @property
    def timeout(self) -> float:
        """Seconds each attempt may take."""
        return self._transport.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._transport.timeout = seconds

    @property
    def breaker_state(self) -> str:
        """The circuit breaker: "closed", "open" (calls fail fast) or "half-open" (the
        cooldown is over; one trial call decides). For health checks and dashboards."""
        return self._transport.breaker_state

    def clear_cache(self) -> None:
        """Forget every cached answer (the next reads ask the broker)."""
        self._cache.clear()

    # -- tokens ---------------------------------------------------------------------------

    def generate_token(self, request: TokenRequest) -> MintedToken:
        """Mint a token inside this client's token (which needs tokens:issue). Never cached."""
        response = self._send("POST", "/api/v1/vault/tokens/generate", json=request.to_json())
        return MintedToken.from_answer(_json(response), response.text)

    def revoke(self, jti: str) -> str:
        """Revoke the token with this jti (this client's token needs tokens:issue and a scope
        containing it): from the next request on, the broker answers it 403 token_revoked.
        Returns the jti. Never cached."""
        return _json(self._send("POST", "/api/v1/vault/tokens/revoke", json={"jti": jti}))[
            "revoked"
        ]

    def revoke_self(self) -> str:
        """Revoke this client's own token: from the next request on, the broker answers it
        403 token_revoked. Returns its jti. Never cached."""
        return _json(self._send("POST", "/api/v1/vault/tokens/revoke-self", json={}))["revoked"]

    # -- secrets ---------------------------------------------------------------------------

    def get(self, environment: str, key: str, *, version: str | None = None) -> Secret:
        """One value (a request uses one of a limited token's uses; a cache hit does not);
        `version` is a commit SHA."""
        params = {"version": version} if version is not None else None
        path = _vault_path(environment, key)
        body = _json(self._send("GET", path, params=params, cache=True))
        return Secret(
            environment=body["environment"],
            key=body["key"],
            value=body["value"],
            version=body.get("version"),
            committed_at=_time(body.get("committed_at")),
        )

    def get_secret_value(
        self,
        SecretId: str,  # noqa: N803 -- AWS Secrets Manager's parameter names
        VersionId: str | None = None,  # noqa: N803
        VersionStage: str | None = None,  # noqa: N803
    ) -> dict[str, Any]:
        """`get` in AWS Secrets Manager's GetSecretValue shape; SecretId is `ENV/KEY`:
        {"Name", "VersionId", "SecretString", "VersionStages", "CreatedDate"}.

        A KEY that is a group of keys (`db` holding `db/user`, `db/password`, as
        `vanta-cli import aws` stores a JSON secret) comes back as that JSON object, as
        AWS gave it: one batch read, which needs secrets:list too; its CreatedDate is None
        (the batch answer names the commit, not its time) and it has no VersionId to ask."""
        environment, key = split_secret_id(SecretId)
        check_stage(VersionStage)
        if VersionId is None and (environment, key) in self._groups:
            return self._group_value(environment, key)
        try:
            secret = self.get(environment, key, version=VersionId)
        except NotFound as missing:
            if VersionId is not None:
                raise
            try:
                return self._group_value(environment, key)
            except (NotFound, Forbidden):
                raise missing from None
        return secret_value(secret, version_asked=VersionId is not None)

    def _group_value(self, environment: str, key: str) -> dict[str, Any]:
        batch = self.read_batch(environment, pattern=f"{key}/*")
        if not batch.values:
            raise NotFound(404, "not_found", f"key {key!r} not found", None)
        self._groups.add((environment, key))
        return group_secret_value(environment, key, batch)

    def get_secret_string(self, secret_id: str, version_stage: str | None = None) -> str:
        """aws-secretsmanager-caching's `SecretCache.get_secret_string`: the value as text."""
        return self.get_secret_value(SecretId=secret_id, VersionStage=version_stage)["SecretString"]

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
        body = _json(self._send("POST", path, json=payload, cache=True))
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
        path = _vault_path(environment)
        body = _json(self._send("GET", path, params={"pattern": pattern}, cache=True))
        return KeyList(body["environment"], tuple(body["keys"]), body.get("version"))

    def history(self, environment: str, key: str) -> _Versions:
        """The commits that changed `key`, newest first."""
        path = f"/api/v1/history/{_segment(environment)}/{_key_path(key)}"
        body = _json(self._send("GET", path, cache=True))
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
        """`list_keys`, just the names."""
        return list(self.list_keys(environment, pattern).keys)

    # -- the transport ----------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        cache: bool = False,
    ) -> requests.Response:
        """The one place requests go through (cache, breaker, retries: cli.client._transport).
        A 2xx answer or a VaultError; `cache=True` for reads."""
        return self._transport.send(method, path, params=params, json=json, cache=cache)


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
