"""The broker's HTTP client and Python SDK: typed results, one exception class
per broker error code, a cache, retries and a circuit breaker. Thread-safe.

`vanta-cli` uses it, and services import it::

    from cli.client import VaultClient
    vc = VaultClient()                       # VANTA_BROKER_URL, VANTA_TOKEN; or url=, token=
    vc.get("prod", "DATABASE_URL").value
    vc.get_many("prod", pattern="DATABASE_*")
    vc.get_secret_value(SecretId="prod/DATABASE_URL")["SecretString"]   # boto3's shape

Every request goes through `VaultClient._send`: reads are answered from the cache while
fresh (no request, no use of a limited token), identical reads in flight at once share
one request, calls fail fast while the circuit breaker is open, transport errors and
502/503/504 are retried with full-jitter backoff (tenacity; a POST only while it cannot
have been carried out), and when the broker stays
unreachable or answers 502/503/504 a cached answer up to `max_stale` old is served with
a logged warning. The transport is a `requests.Session` that may be passed in (a test
mounts an adapter over the Flask app; a service shares its pool).

Errors, all importable from here::

    VaultError
     ├── BrokerUnavailable       unreachable, timed out, circuit open
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
No exception text or log line ever holds a token or a secret value. The classes live in
`cli.client._errors`, the typed results in `cli.client._results`; import them from here.
"""

from __future__ import annotations

from cli.client._client import (
    DEFAULT_TIMEOUT,
    VaultClient,
)
from cli.client._errors import (
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
from cli.client._results import (
    Batch,
    KeyList,
    MintedToken,
    Secret,
    TokenRequest,
    TokenScope,
    Value,
    Version,
    nested,
)
from cli.client._settings import DEFAULT_BROKER_URL

__all__ = [
    "AuditUnavailable",
    "BadRequest",
    "Batch",
    "BrokerError",
    "BrokerUnavailable",
    "DEFAULT_BROKER_URL",
    "DEFAULT_TIMEOUT",
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
    "nested",
]
