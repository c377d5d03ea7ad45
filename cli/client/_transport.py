"""How `cli.client.VaultClient` sends a request: cache, single flight,
circuit breaker, retries, stale answers. The one path every request takes.

A read (`cache=True`) is answered from memory while fresh; identical reads in flight at
once share one request; while the breaker is open calls fail fast; transport errors and
502/503/504 are retried (cli.client._retry; a POST only while it cannot have been carried
out); when the broker stays unreachable or keeps
answering 502/503/504, a cached answer up to `max_stale` old is returned and a warning
logged. A 401 or 403 empties the cache. Thread-safe.
"""

from __future__ import annotations

import json as jsonlib
import logging
from collections.abc import Hashable, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from cli.caching import SingleFlight
from cli.client._breaker import Admission, CircuitBreaker, Refusal
from cli.client._cache import AnswerCache
from cli.client._errors import BrokerUnavailable, VaultError, error_from_response
from cli.client._retry import RETRY_STATUSES, RetryPolicy, is_transient, send_with_retries
from cli.client._settings import ClientCert, Settings, safe_url

POOL_SIZE = 32  # connections kept per host: enough for a busy thread pool

log = logging.getLogger("cli.client")


class Transport:
    """Sends requests to one broker with one token; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: requests.Session | None,
        timeout: float,
        retry: RetryPolicy,
        cache: AnswerCache[requests.Response],
        breaker: CircuitBreaker,
    ) -> None:
        self.url = settings.url
        self._token = settings.token
        self._verify: str | bool = settings.verify
        self._cert: ClientCert | None = settings.client_cert
        self.timeout = timeout
        self.owns_session = session is None
        self.session = session if session is not None else _pooled_session()
        self._retry = retry
        self._cache = cache
        self._flights: SingleFlight[requests.Response] = SingleFlight()
        self._breaker = breaker

    @property
    def has_token(self) -> bool:
        return self._token is not None

    @property
    def breaker_state(self) -> str:
        return self._breaker.state

    def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        cache: bool = False,
    ) -> requests.Response:
        """A 2xx answer or a VaultError. Reads (`cache=True`) come from the cache while
        fresh, and identical reads in flight at once share one request."""
        if not (cache and self._cache.enabled):
            return self._call(method, path, params, json, None)
        key = _cache_key(method, path, params, json)
        hit = self._cache.fresh(key)
        if hit is not None:
            return hit
        return self._flights.run(key, lambda: self._lead(method, path, params, json, key))

    def _lead(
        self, method: str, path: str, params: Mapping[str, str] | None, json: Any, key: Hashable
    ) -> requests.Response:
        # Another flight may have filled the cache between our look and our turn.
        hit = self._cache.fresh(key)
        return hit if hit is not None else self._call(method, path, params, json, key)

    def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        json: Any,
        key: Hashable | None,
    ) -> requests.Response:
        """One call through the breaker and the retries; the stale answer when it fails."""
        admission = self._breaker.admit()
        if isinstance(admission, Refusal):
            return self._stale_or_raise(key, method, path, self._circuit_open(admission))
        try:
            response = send_with_retries(
                lambda: self._attempt(method, path, params, json),
                self._retry,
                idempotent=method == "GET",
            )
        except requests.RequestException as exc:
            error = self._transport_error(exc)
            if isinstance(error, BrokerUnavailable):
                self._breaker.failed(admission)
                return self._stale_or_raise(key, method, path, error)
            self._breaker.abandoned(admission)
            raise error from None
        except BaseException:
            self._breaker.abandoned(admission)
            raise
        return self._answer(admission, response, key, method, path)

    def _answer(
        self,
        admission: Admission,
        response: requests.Response,
        key: Hashable | None,
        method: str,
        path: str,
    ) -> requests.Response:
        if response.status_code in RETRY_STATUSES:
            self._breaker.failed(admission)
            return self._stale_or_raise(key, method, path, error_from_response(response))
        self._breaker.succeeded(admission)
        if response.status_code in (401, 403):
            self._cache.clear()  # this token may read nothing more from memory either
        if not 200 <= response.status_code < 300:
            raise error_from_response(response)
        if key is not None:
            self._cache.put(key, response)
        return response

    def _attempt(
        self, method: str, path: str, params: Mapping[str, str] | None, json: Any
    ) -> requests.Response:
        headers = {"Accept": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            return self.session.request(
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
        except requests.RequestException:
            raise
        except OSError as exc:  # requests' "could not find the TLS certificate file"
            raise VaultError(f"TLS settings: {exc}") from None

    def _transport_error(self, exc: requests.RequestException) -> VaultError:
        """The one-line VaultError for a request that got no answer."""
        where = safe_url(self.url)
        if isinstance(exc, requests.Timeout):
            return BrokerUnavailable(
                f"the broker at {where} did not answer within {self.timeout:g}s"
            )
        if isinstance(
            exc,
            requests.exceptions.InvalidURL
            | requests.exceptions.MissingSchema
            | requests.exceptions.InvalidSchema,
        ):
            return VaultError(f"invalid broker URL {where!r}")
        if isinstance(exc, requests.exceptions.InvalidHeader):
            # requests' own message quotes the header, i.e. the token: never pass it on
            return VaultError("the token holds characters a bearer token cannot have")
        if is_transient(exc) or isinstance(exc, requests.exceptions.SSLError):
            return BrokerUnavailable(f"cannot reach the broker at {where}: {_reason(exc)}")
        return VaultError(f"request to the broker at {where} failed: {type(exc).__name__}")

    def _circuit_open(self, refusal: Refusal) -> BrokerUnavailable:
        where = safe_url(self.url)
        if refusal.retry_in > 0:
            then = f"next try in {refusal.retry_in:.1f}s"
        else:
            then = "a trial call is under way"
        return BrokerUnavailable(
            f"circuit open: the broker at {where} failed {refusal.failures} calls in a row ({then})"
        )

    def _stale_or_raise(
        self, key: Hashable | None, method: str, path: str, error: VaultError
    ) -> requests.Response:
        """A cached answer up to `max_stale` old, with a warning; else raise `error`."""
        entry = None if key is None else self._cache.stale(key)
        if entry is None:
            raise error from None
        log.warning(
            "serving a cached answer %.1fs old for %s %s: %s",
            self._cache.age(entry),
            method,
            path,
            error,
        )
        return entry.answer


def _pooled_session() -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _cache_key(method: str, path: str, params: Mapping[str, str] | None, json: Any) -> Hashable:
    query = tuple(sorted((params or {}).items()))
    body = None if json is None else jsonlib.dumps(json, sort_keys=True)
    return (method, path, query, body)


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
