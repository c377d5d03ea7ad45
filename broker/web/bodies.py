"""Request bodies take turns: one is read at a time in a worker.

granian hands a request to its thread once the head is whole and streams the body in, so a
client that trickles a body holds the thread that reads it. Readers of bodies take turns,
so tricklers hold one thread of a worker at most and its other threads go on answering
everything else (reads carry no body). A body that cannot have its turn soon is answered
429 at once: a normal body is in memory already and takes microseconds to read, so only a
trickled one keeps the turn. On gunicorn the broker's worker has gathered every body
before the app runs, so every turn is that short."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from broker.errors import RateLimited

# How long a body waits for its turn before being turned away.
TURN_WAIT_SECONDS = 0.2
RETRY_AFTER_SECONDS = 1

_turn = threading.Lock()


@contextmanager
def body_turn() -> Iterator[None]:
    """Read the request's body inside this block (Werkzeug keeps what it read)."""
    if not _turn.acquire(timeout=TURN_WAIT_SECONDS):
        raise RateLimited(RETRY_AFTER_SECONDS)
    try:
        yield
    finally:
        _turn.release()
