"""Slow and idle clients never hold a worker, on either server: while many connections
trickle a request or send nothing at all, everyone else is answered within a second."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests
from support.brokers import start_broker, stop_broker
from support.tokens import bearer, make_token

SLOW = 64  # connections that trickle or idle at once
PROMPT_SECONDS = 1.0
FORM = "application/x-www-form-urlencoded"


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    return host, int(port)


def _assert_answered_promptly(url: str, token: str, tls: dict | None = None) -> None:
    """Fresh connections, one after another: each answered in under a second."""
    for path, headers in [
        ("/healthz", {}),
        ("/api/v1/vault/dev/PORT", bearer(token)),
        ("/healthz", {}),
        ("/api/v1/vault/dev/PORT", bearer(token)),
    ]:
        started = time.monotonic()
        r = requests.get(f"{url}{path}", headers=headers, timeout=5, **(tls or {}))
        assert r.status_code == 200
        assert time.monotonic() - started < PROMPT_SECONDS, path


@contextmanager
def trickling(
    url: str,
    count: int,
    every: float,
    body: bool = False,
    path: str = "/api/v1/vault/dev/batch",
    content_type: str = "application/json",
    token: str | None = None,
) -> Iterator[list]:
    """`count` connections that send a request line, then one header line every `every`
    seconds (or, with `body`, a POST's body to `path` a byte at a time), never finishing."""
    host, port = _host_port(url)
    stop = threading.Event()
    conns = [socket.create_connection((host, port), timeout=10) for _ in range(count)]
    for conn in conns:
        if body:
            conn.sendall(
                b"POST %s HTTP/1.1\r\nHost: vault\r\n" % path.encode()
                + (b"Authorization: Bearer %s\r\n" % token.encode() if token else b"")
                + b"Content-Type: %s\r\nContent-Length: 1000\r\n\r\n{" % content_type.encode()
            )
        else:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: vault\r\n")

    def trickle() -> None:
        n = 0
        while not stop.wait(every):
            n += 1
            for conn in conns:
                try:
                    conn.sendall(b" " if body else b"X-Trickle-%d: a\r\n" % n)
                except OSError:
                    pass  # the server may close a connection that took too long

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield conns
    finally:
        stop.set()
        thread.join()
        for conn in conns:
            conn.close()


@contextmanager
def idle(url: str, count: int, hello: bytes = b"") -> Iterator[list]:
    """`count` connections that send `hello` (nothing by default) and then wait."""
    host, port = _host_port(url)
    conns = [socket.create_connection((host, port), timeout=10) for _ in range(count)]
    for conn in conns:
        if hello:
            conn.sendall(hello)
    try:
        yield conns
    finally:
        for conn in conns:
            conn.close()


@pytest.fixture(params=["granian", "gunicorn"])
def server(request) -> str:
    return request.param


@pytest.fixture
def broker(config, tmp_path, server):
    running = start_broker(config, tmp_path, extra_args=["--server", server])
    yield running
    stop_broker(running)


def test_trickled_headers_do_not_hold_a_worker(broker, config):
    token = make_token(config, environment="dev")
    with trickling(broker.url, SLOW, every=0.2):
        time.sleep(0.5)  # let the trickle begin: every slow connection is mid-request now
        _assert_answered_promptly(broker.url, token)


def test_idle_connections_do_not_hold_a_worker(broker, config):
    token = make_token(config, environment="dev")
    with idle(broker.url, SLOW), idle(broker.url, SLOW, b"GET /healthz HTTP/1.1\r\n"):
        _assert_answered_promptly(broker.url, token)


def test_the_red_teams_slow_clients_do_not_stop_the_broker(broker, config):
    """One more idle connection every second, eight connections sending a header line every
    2 s, and a POST whose body arrives a byte at a time: reads go on answering at once."""
    token = make_token(config, environment="dev")
    host, port = _host_port(broker.url)
    opened = []
    with trickling(broker.url, 8, every=2.0), trickling(broker.url, 4, every=0.5, body=True):
        try:
            for _ in range(4):
                opened.append(socket.create_connection((host, port), timeout=10))
                _assert_answered_promptly(broker.url, token)
                time.sleep(1.0)  # the red team's pace: one new idle connection a second
        finally:
            for conn in opened:
                conn.close()


def test_a_slow_post_body_still_gets_its_answer(broker, config):
    """Trickled slowly but whole, a body is read and answered like any other."""
    token = make_token(config, environment="dev")
    host, port = _host_port(broker.url)
    body = b'{"keys": ["PORT"]}'
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(
            b"POST /api/v1/vault/dev/batch HTTP/1.1\r\nHost: vault\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        for i in range(len(body)):
            if i == len(body) // 2:  # half the body sent: others are still answered
                _assert_answered_promptly(broker.url, token)
            conn.sendall(body[i : i + 1])
            time.sleep(0.02)
        answer = _read_answer(conn)
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"PORT":8080' in answer


def _read_answer(conn: socket.socket) -> bytes:
    """One whole answer (head and a Content-Length body) from a raw connection."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += conn.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def test_trickled_sign_in_forms_do_not_stop_the_broker(broker, config):
    """The sign-in form is read before anyone is known, so anyone can trickle one: the
    tricklers hold one thread of a worker at most, reads go on, and a sign-in that arrives
    meanwhile is told to come back (429) at once rather than left waiting."""
    token = make_token(config, environment="dev")
    with trickling(broker.url, 8, every=0.5, body=True, path="/ui/login", content_type=FORM):
        time.sleep(0.5)  # every slow connection has sent its head and part of a body
        _assert_answered_promptly(broker.url, token)
        started = time.monotonic()
        r = requests.post(f"{broker.url}/ui/login", data={"token": token}, timeout=5)
        assert time.monotonic() - started < PROMPT_SECONDS
        assert r.status_code in (400, 429)  # no CSRF cookie: 400 if it had its turn


def test_a_token_holders_trickled_bodies_do_not_stop_the_broker(broker, config):
    """Bodies take turns in a worker: a token holder trickling batch requests holds one
    thread of a worker at most; reads go on, and a whole batch request meanwhile is
    answered at once (its data, or 429 when a trickler has the worker's turn)."""
    token = make_token(config, environment="dev")
    with trickling(broker.url, 8, every=0.5, body=True, token=token):
        time.sleep(0.5)  # every slow connection has sent its head and part of a body
        _assert_answered_promptly(broker.url, token)
        for _ in range(4):
            started = time.monotonic()
            r = requests.post(
                f"{broker.url}/api/v1/vault/dev/batch",
                json={"keys": ["PORT"]},
                headers=bearer(token),
                timeout=5,
            )
            assert time.monotonic() - started < PROMPT_SECONDS
            assert r.status_code in (200, 429), r.text
            if r.status_code == 429:
                assert r.json()["error"]["code"] == "rate_limited"
                assert r.headers["Retry-After"] == "1"


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_unfinished_tls_handshakes_do_not_hold_a_worker(config, tmp_path, pki, server):
    args = ["--server", server, "--certfile", str(pki["cert"]), "--keyfile", str(pki["key"])]
    tls = {"verify": str(pki["ca"])}
    broker = start_broker(config, tmp_path, extra_args=args, scheme="https", health_kwargs=tls)
    try:
        token = make_token(config, environment="dev")
        # A TLS record header that promises a ClientHello and never delivers it, and
        # connections that never start the handshake at all.
        partial_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
        with idle(broker.url, SLOW // 2, partial_hello), idle(broker.url, SLOW // 2):
            _assert_answered_promptly(broker.url, token, tls)
    finally:
        stop_broker(broker)


def test_mutual_tls_on_gunicorn_holds_slow_handshakes_too(config, tmp_path, pki):
    args = [
        "--certfile",
        str(pki["cert"]),
        "--keyfile",
        str(pki["key"]),
        "--client-ca",
        str(pki["ca"]),
    ]
    tls = {"verify": str(pki["ca"]), "cert": str(pki["client"])}
    broker = start_broker(config, tmp_path, extra_args=args, scheme="https", health_kwargs=tls)
    try:
        token = make_token(config, environment="dev")
        context = ssl.create_default_context(cafile=str(pki["ca"]))
        context.load_cert_chain(str(pki["client"]))
        host, port = _host_port(broker.url)
        with idle(broker.url, SLOW // 2, b"\x16\x03\x01\x02\x00\x01"):
            # a handshake done, then a request trickled over TLS
            slow = context.wrap_socket(
                socket.create_connection((host, port), timeout=10), server_hostname=host
            )
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: vault\r\n")
            try:
                _assert_answered_promptly(broker.url, token, tls)
            finally:
                slow.close()
    finally:
        stop_broker(broker)
