"""Retries for the SDK: transport errors and 502/503/504 only, exponential
backoff with full jitter, each attempt bounded by the client's timeout.

A POST (a mint, a batch read) may have been carried out when its answer was lost: a
second attempt would mint a second token or use a usage-limited token twice. So a POST
is retried only when it provably never reached the broker (the connection was refused
or could not be opened in time) or when the broker answered 503 (it refused the request
and counted nothing); a reset or a timeout after sending, a 502 or a 504 end it.

tenacity does the looping: `wait_random_exponential` is the "full jitter" of AWS's
backoff article (each wait drawn uniformly from 0 to min(cap, base * 2**n)), and it
composes retry-on-exception with retry-on-result, which urllib3's Retry (living inside
the transport adapter, where the broker's answers are not yet ours) would not give us.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests
import tenacity
import urllib3

RETRY_STATUSES = frozenset({502, 503, 504})

log = logging.getLogger("cli.client")


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` more attempts after the first; the n-th waits up to
    min(`backoff_max`, `backoff` * 2**(n-1)) seconds, drawn uniformly."""

    retries: int = 3
    backoff: float = 0.2
    backoff_max: float = 5.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.backoff_max < 0:
            raise ValueError("retries, backoff and backoff_max cannot be negative")


def is_transient(exc: BaseException) -> bool:
    """A transport failure worth another attempt: refused, reset, timed out. Not a TLS
    failure (a certificate does not become valid by asking again), nor a bad URL."""
    if isinstance(exc, requests.exceptions.SSLError):
        return False
    return isinstance(
        exc,
        requests.ConnectionError | requests.Timeout | requests.exceptions.ChunkedEncodingError,
    )


def never_sent(exc: BaseException) -> bool:
    """The request never left: the connection was refused or not opened in time."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.SSLError) or not isinstance(
        exc, requests.ConnectionError
    ):
        return False
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _retryable_answer(response: requests.Response) -> bool:
    return response.status_code in RETRY_STATUSES


def _retryable_post_answer(response: requests.Response) -> bool:
    return response.status_code == 503


def _log_retry(state: tenacity.RetryCallState) -> None:
    outcome = state.outcome
    if outcome is None:
        return
    failure = outcome.exception()
    what = type(failure).__name__ if failure else f"HTTP {outcome.result().status_code}"
    wait = state.next_action.sleep if state.next_action else 0.0
    log.debug("attempt %d failed (%s); retrying in %.2fs", state.attempt_number, what, wait)


def send_with_retries(
    attempt: Callable[[], requests.Response],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    *,
    idempotent: bool = True,
) -> requests.Response:
    """The first answer that is not 502/503/504, else the last one; or the last
    transport exception, raised as requests raised it. Anything else raises at once.
    Not `idempotent` (a POST): only requests never sent and 503 answers are retried."""
    if idempotent:
        retry = tenacity.retry_if_exception(is_transient) | tenacity.retry_if_result(
            _retryable_answer
        )
    else:
        retry = tenacity.retry_if_exception(never_sent) | tenacity.retry_if_result(
            _retryable_post_answer
        )
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.retries + 1),
        wait=tenacity.wait_random_exponential(multiplier=policy.backoff, max=policy.backoff_max),
        retry=retry,
        before_sleep=_log_retry,
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        sleep=sleep,
    )
    return retrying(attempt)
