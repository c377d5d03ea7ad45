"""A small closed-loop HTTP/1.1 load generator: N keep-alive connections, one event loop.

Each connection sends one request, waits for the whole answer, and sends the next, so the
latency of every request is measured from its first byte sent to its last byte received.
Requests are prebuilt bytes and answers are parsed only as far as status and length, so
the generator costs little CPU next to the server it measures (they share the machine).
Every run is bounded by a request count and a duration.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

READ_CHUNK = 65536


def build_get(path: str, host: str, headers: dict[str, str] | None = None) -> bytes:
    """A GET request as bytes, keep-alive."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class LoadResult:
    """What one run measured: answers by status, latencies in seconds, wall time."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    reconnects: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, fraction: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
        return ordered[index]

    @property
    def p50_ms(self) -> float:
        return self.percentile(0.50) * 1000

    @property
    def p99_ms(self) -> float:
        return self.percentile(0.99) * 1000


class _Connection:
    """One keep-alive connection cycling through its requests."""

    def __init__(self, address: tuple[str, int], requests: Sequence[bytes], offset: int) -> None:
        self.address = address
        self.requests = requests
        self.next_index = offset
        self.sock: socket.socket | None = None
        self.buffer = bytearray()
        self.started = 0.0
        self.pending = b""

    def open(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.sock = sock
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def begin(self) -> None:
        request = self.requests[self.next_index % len(self.requests)]
        self.next_index += 1
        self.buffer.clear()
        self.started = time.perf_counter()
        assert self.sock is not None
        sent = self.sock.send(request)
        self.pending = request[sent:]

    def answer(self) -> tuple[int, bool] | None:
        """(status, server closes) once the whole answer is buffered, else None."""
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = bytes(self.buffer[:head_end]).decode("latin-1").lower()
        length = 0
        closes = False
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name == "content-length":
                length = int(value)
            elif name == "connection" and "close" in value:
                closes = True
        if len(self.buffer) < head_end + 4 + length:
            return None
        return int(head[9:12]), closes


def run_load(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    connections: int = 16,
    duration: float = 5.0,
    max_requests: int = 200_000,
    warmup: float = 0.5,
) -> LoadResult:
    """Drive the server for `duration` seconds (after `warmup`) or `max_requests` answers,
    whichever comes first; answers during the warm-up are not counted."""
    selector = selectors.DefaultSelector()
    conns = [_Connection((host, port), requests, i) for i in range(connections)]
    for conn in conns:
        selector.register(conn.open(), selectors.EVENT_READ, conn)
    start = time.perf_counter()
    measure_from = start + warmup
    hard_stop = measure_from + duration
    result = LoadResult(seconds=0.0)
    for conn in conns:
        conn.begin()
    try:
        while True:
            now = time.perf_counter()
            if now >= hard_stop or result.requests >= max_requests:
                break
            for key, _ in selector.select(timeout=0.5):
                conn: _Connection = key.data
                _receive(conn, selector, result, measure_from)
    finally:
        for conn in conns:
            conn.close()
        selector.close()
    result.seconds = min(time.perf_counter(), hard_stop) - measure_from
    return result


def _receive(
    conn: _Connection, selector: selectors.BaseSelector, result: LoadResult, measure_from: float
) -> None:
    assert conn.sock is not None
    if conn.pending:  # a request larger than the socket buffer: finish sending it first
        try:
            sent = conn.sock.send(conn.pending)
            conn.pending = conn.pending[sent:]
        except BlockingIOError:
            pass
    try:
        chunk = conn.sock.recv(READ_CHUNK)
    except BlockingIOError:
        return
    except ConnectionError:
        chunk = b""
    if not chunk:  # the server closed an idle or finished connection: reopen, resend
        selector.unregister(conn.sock)
        conn.close()
        result.reconnects += 1
        selector.register(conn.open(), selectors.EVENT_READ, conn)
        conn.next_index -= 1
        conn.begin()
        return
    conn.buffer += chunk
    done = conn.answer()
    if done is None:
        return
    finished = time.perf_counter()
    status, closes = done
    if conn.started >= measure_from:
        result.latencies.append(finished - conn.started)
        result.statuses[status] += 1
    if closes:
        selector.unregister(conn.sock)
        conn.close()
        result.reconnects += 1
        selector.register(conn.open(), selectors.EVENT_READ, conn)
    conn.begin()
