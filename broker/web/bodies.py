"""Bodies read before anyone is known: the dashboard's sign-in and sign-out forms and the
Git webhook. granian hands a request to its thread once the head is whole and streams the
body in, so a client that trickles a body holds the thread that reads it. These readers
take turns, one at a time in a worker: a trickler holds one thread at most, and the
worker's other threads go on answering everything else. A reader that cannot have its turn
soon is answered 429 at once (a normal body is in memory already and takes microseconds)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from broker.errors import RateLimited

# How long a second anonymous body waits for its turn before being turned away.
TURN_WAIT_SECONDS = 0.2
RETRY_AFTER_SECONDS = 1

_turn = threading.Lock()


@contextmanager
def anonymous_body() -> Iterator[None]:
    """Read the request's body inside this block (Werkzeug keeps what it read)."""
    if not _turn.acquire(timeout=TURN_WAIT_SECONDS):
        raise RateLimited(RETRY_AFTER_SECONDS)
    try:
        yield
    finally:
        _turn.release()
