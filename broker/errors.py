"""Domain errors and their one mapping onto the contract's JSON error bodies.

ApiError
 ├── BadRequest          400 bad_request
 ├── TokenInvalid        401 token_invalid (one generic message, whatever failed)
 ├── ScopeDenied         403 scope_denied
 ├── PermissionDenied    403 permission_denied
 ├── UsageExhausted      403 usage_exhausted
 ├── TokenRevoked        403 token_revoked
 ├── NotFound            404 not_found
 ├── MethodNotAllowed    405 method_not_allowed
 ├── PayloadTooLarge     413 payload_too_large
 ├── DecryptFailed       503 decrypt_failed (FileRefused: a file that is not served)
 ├── AuditUnavailable    503 audit_unavailable
 ├── StateUnavailable    503 state_unavailable
 ├── SyncFailed          503 sync_failed (TreeUnavailable: nothing served yet)
 ├── SignatureInvalid    401 signature_invalid
 ├── SyncRefused         409 non_fast_forward | unsigned_commit
 └── RateLimited         429 rate_limited (with Retry-After)
"""

from __future__ import annotations


class ApiError(Exception):
    status = 500
    code = "internal_error"
    default_message = "internal error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)

    @classmethod
    def codes(cls) -> tuple[str, ...]:
        """The codes this error answers with."""
        return (cls.code,)

    def extra(self) -> dict[str, object]:
        """Fields the error body carries beside `error` and `request_id`."""
        return {}

    def headers(self) -> dict[str, str]:
        """Headers the error answer carries."""
        return {}


class BadRequest(ApiError):
    status, code, default_message = 400, "bad_request", "malformed request"


class TokenInvalid(ApiError):
    status, code, default_message = 401, "token_invalid", "missing or invalid bearer token"


class ScopeDenied(ApiError):
    status, code, default_message = 403, "scope_denied", "outside the token's scope"


class PermissionDenied(ApiError):
    status, code, default_message = 403, "permission_denied", "the token lacks the permission"


class UsageExhausted(ApiError):
    status, code, default_message = 403, "usage_exhausted", "the token's usage limit is used up"


class TokenRevoked(ApiError):
    status, code, default_message = 403, "token_revoked", "the token has been revoked"


class NotFound(ApiError):
    status, code, default_message = 404, "not_found", "not found"


class MethodNotAllowed(ApiError):
    status, code, default_message = 405, "method_not_allowed", "method not allowed"

    def __init__(self, message: str | None = None, allow: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allow)}


class PayloadTooLarge(ApiError):
    status, code, default_message = 413, "payload_too_large", "request body over 1 MiB"


class DecryptFailed(ApiError):
    status, code, default_message = 503, "decrypt_failed", "the secrets could not be decrypted"


class FileRefused(DecryptFailed):
    """A secrets file that is not served: `reason` says why (anchors or aliases,
    or too large), never which file or what it holds."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the environment's secrets file is not served: {reason}")
        self.reason = reason


class AuditUnavailable(ApiError):
    status, code, default_message = (
        503,
        "audit_unavailable",
        "the audit record could not be written",
    )


class StateUnavailable(ApiError):
    status, code, default_message = 503, "state_unavailable", "the token state store is unavailable"


class SyncFailed(ApiError):
    status, code, default_message = 503, "sync_failed", "the Git remote could not be fetched"


class TreeUnavailable(SyncFailed):
    default_message = "no commit is being served yet"


class SignatureInvalid(ApiError):
    status, code, default_message = 401, "signature_invalid", "missing or invalid webhook signature"


class SyncRefused(ApiError):
    """A fetched commit that may not be served: not a fast-forward, or not signed."""

    status = 409
    REASONS = ("non_fast_forward", "unsigned_commit")

    @classmethod
    def codes(cls) -> tuple[str, ...]:
        return cls.REASONS

    def __init__(self, code: str, message: str, version: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.version = version

    def extra(self) -> dict[str, object]:
        return {"version": self.version}


class RateLimited(ApiError):
    status, code, default_message = 429, "rate_limited", "too many requests"

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


def error_classes() -> list[type[ApiError]]:
    """Every error of the tree, parents before their children."""
    found: list[type[ApiError]] = []
    pending = list(ApiError.__subclasses__())
    while pending:
        error = pending.pop(0)
        found.append(error)
        pending.extend(error.__subclasses__())
    return found
