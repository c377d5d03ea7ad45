"""The exception classes of `cli.client` (the tree is drawn in its docstring), and the
one mapping from a broker error answer to them.

Every `BrokerError` carries `status`, `code`, `message` and `request_id`. A code not
known here is mapped by its HTTP status, so a newer broker still raises something
sensible. No exception text ever holds a token or a secret value.
"""

from __future__ import annotations

from collections.abc import Mapping

import requests


class VaultError(Exception):
    """Anything this client raises."""


class BrokerUnavailable(VaultError):
    """The broker could not be reached, did not answer in time, or the circuit breaker is
    open (calls fail fast for a while after repeated failures)."""


class BrokerError(VaultError):
    """The broker answered with an error body: `{"error": {"code", "message"}, "request_id"}`."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        super().__init__(status, code, message, request_id)

    def __str__(self) -> str:
        text = f"{self.status} {self.code}: {self.message}"
        return f"{text} (request_id {self.request_id})" if self.request_id else text


class BadRequest(BrokerError):
    """400 bad_request, 405 method_not_allowed, 413 payload_too_large."""


class TokenInvalid(BrokerError):
    """401: the token is missing, malformed, expired, badly signed or not ours."""


class Forbidden(BrokerError):
    """403: the token is valid but may not do this."""


class ScopeDenied(Forbidden):
    """403 scope_denied: outside the token's environment, pattern or permissions."""


class PermissionDenied(Forbidden):
    """403 permission_denied: the token lacks the permission the endpoint needs."""


class UsageExhausted(Forbidden):
    """403 usage_exhausted: the token's usage limit is used up."""


class TokenRevoked(Forbidden):
    """403 token_revoked."""


class NotFound(BrokerError):
    """404: environment, key, version or endpoint not found."""


class RateLimited(BrokerError):
    """429 rate_limited; `retry_after` is the broker's Retry-After in seconds, if given."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: str | None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(status, code, message, request_id)
        self.retry_after = retry_after


class ServiceUnavailable(BrokerError):
    """503: the broker cannot serve the request right now."""


class DecryptFailed(ServiceUnavailable):
    """503 decrypt_failed."""


class AuditUnavailable(ServiceUnavailable):
    """503 audit_unavailable: no audit record, so no answer."""


class StateUnavailable(ServiceUnavailable):
    """503 state_unavailable: usage counts and revocations cannot be checked."""


_BY_CODE: dict[str, type[BrokerError]] = {
    "bad_request": BadRequest,
    "method_not_allowed": BadRequest,
    "payload_too_large": BadRequest,
    "token_invalid": TokenInvalid,
    "signature_invalid": TokenInvalid,
    "scope_denied": ScopeDenied,
    "permission_denied": PermissionDenied,
    "usage_exhausted": UsageExhausted,
    "token_revoked": TokenRevoked,
    "not_found": NotFound,
    "rate_limited": RateLimited,
    "decrypt_failed": DecryptFailed,
    "audit_unavailable": AuditUnavailable,
    "state_unavailable": StateUnavailable,
}
_BY_STATUS: dict[int, type[BrokerError]] = {
    400: BadRequest,
    401: TokenInvalid,
    403: Forbidden,
    404: NotFound,
    405: BadRequest,
    413: BadRequest,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_from_response(response: requests.Response) -> BrokerError:
    """The exception for an error answer; its class comes from the code, else the status."""
    status = response.status_code
    request_id = response.headers.get("X-Request-Id") or None
    code, message = f"http_{status}", f"unexpected answer (HTTP {status})"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("code"), str):
            code = error["code"]
            message = str(error.get("message") or code)
        if isinstance(body.get("request_id"), str):
            request_id = body["request_id"]
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status, BrokerError)
    if cls is RateLimited:
        return RateLimited(status, code, message, request_id, _retry_after(response))
    return cls(status, code, message, request_id)


def _retry_after(response: requests.Response) -> int | None:
    raw = response.headers.get("Retry-After", "")
    return int(raw) if raw.isdigit() else None
