"""The broker on gunicorn: the server that hands the application the client's verified
certificate, so it serves when clients authenticate with mutual TLS.

gunicorn's threaded worker reads a request in a pool thread, so a client that trickles its
TLS handshake or headers would hold that thread. `PatientWorker` does that reading in the
worker's event loop instead: a connection reaches a thread only once its request (head
and body) is whole, and one that is not whole within HEAD_TIMEOUT_SECONDS is closed.
"""

from __future__ import annotations

import logging
import selectors
import ssl
import time
from functools import partial
from typing import Any

from gunicorn import http as gunicorn_http
from gunicorn import sock as gunicorn_sock
from gunicorn import util as gunicorn_util
from gunicorn.workers.gthread import ThreadWorker

from broker.config import Config
from broker.serving import ServeOptions, load_app
from broker.web.hooks import CLIENT_CERT_KEY

# A client gets this long to finish its TLS handshake and send a whole request.
HEAD_TIMEOUT_SECONDS = 10.0
# Bodies over 1 MiB are refused by the broker: no need to hold more of one in memory.
MAX_BODY_BYTES = 1024 * 1024
MAX_HEAD_BYTES = 64 * 1024
_RECV_BYTES = 65536

_RDN_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "domainComponent": "DC",
}


def client_cert_subject(sock: Any) -> str | None:
    """The verified peer certificate's subject, RFC 4514 order ("CN=billing,O=Acme")."""
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return None
    try:
        cert = getpeercert()
    except (OSError, ValueError):
        return None
    if not cert:
        return None
    names = [
        f"{_RDN_NAMES.get(name, name)}={value}"
        for rdn in cert.get("subject", ())
        for name, value in rdn
    ]
    return ",".join(reversed(names)) or None  # RFC 4514: most specific first


def with_client_cert(app: Any) -> Any:
    """Put the client certificate's subject where the app looks for it."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        environ[CLIENT_CERT_KEY] = client_cert_subject(environ.get("gunicorn.socket"))
        return app(environ, start_response)

    return wsgi


def request_complete(data: bytes) -> bool:
    """Whether `data` holds a whole HTTP/1.1 request: its head, and its body by
    Content-Length or chunked framing. True also when gunicorn's parser should look at it
    now (malformed, or over the sizes the broker accepts): it answers those itself."""
    head = _head(data)
    if head is None:
        return len(data) > MAX_HEAD_BYTES or b"\n\n" in data
    end, length, chunked, _ = head
    if length == -1:
        return True
    body = data[end:]
    if chunked:
        return _chunked_complete(body)
    if length is None or length > MAX_BODY_BYTES:
        return True
    return len(body) >= length


def _head(data: bytes) -> tuple[int, int | None, bool, int] | None:
    """(where the body starts, Content-Length (-1: malformed), chunked, where an
    `Expect: 100-continue` line starts (-1: none)), or None while the head is incomplete."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    length: int | None = None
    chunked = False
    expect = -1
    position = data.find(b"\r\n") + 2
    while position < end + 2:
        line_end = data.find(b"\r\n", position)
        name, _, value = data[position:line_end].partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                length = -1
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"expect" and value.strip().lower() == b"100-continue":
            expect = position
        position = line_end + 2
    return end + 4, length, chunked, expect


def _chunked_complete(body: bytes) -> bool:
    position = 0
    while True:
        end = body.find(b"\r\n", position)
        if end < 0:
            return len(body) > MAX_BODY_BYTES + MAX_HEAD_BYTES
        try:
            size = int(body[position:end].split(b";", 1)[0].strip(), 16)
        except ValueError:
            return True
        if size == 0:  # then trailer lines, up to an empty one
            return body.startswith(b"\r\n", end + 2) or body.find(b"\r\n\r\n", end) >= 0
        position = end + 2 + size + 2
        if position > len(body):
            return len(body) > MAX_BODY_BYTES + MAX_HEAD_BYTES


class PatientWorker(ThreadWorker):
    """gunicorn's threaded worker, but the event loop gathers each request whole (TLS
    handshake, head, body) before a thread takes the connection."""

    def init_process(self) -> None:
        self._gathering: dict[Any, float] = {}  # connection -> when it is given up
        self._tls = gunicorn_sock.ssl_context(self.cfg) if self.cfg.is_ssl else None
        super().init_process()

    def enqueue_req(self, conn: Any) -> None:
        """Every way a connection reaches the pool comes here: gather its request first."""
        if getattr(conn, "vanta_whole", False):
            conn.vanta_whole = False
            super().enqueue_req(conn)
            return
        if conn.parser is not None:  # kept alive: bytes a read ran ahead with come first
            conn.vanta_buffer = bytearray(conn.parser.unreader.take_buffered())
        else:
            conn.vanta_buffer = bytearray()
            if self._tls is not None and not isinstance(conn.sock, ssl.SSLSocket):
                conn.sock = self._tls.wrap_socket(
                    conn.sock,
                    server_side=True,
                    suppress_ragged_eofs=self.cfg.suppress_ragged_eofs,
                    do_handshake_on_connect=False,
                )
        conn.sock.setblocking(False)
        self._gathering[conn] = time.monotonic() + HEAD_TIMEOUT_SECONDS
        self._gather(conn)

    def _gather(self, conn: Any, *_: Any) -> None:
        sock = conn.sock
        self._unwatch(conn)
        try:
            if isinstance(sock, ssl.SSLSocket) and conn.parser is None:
                sock.do_handshake()  # returns at once once it is done
            while not request_complete(bytes(conn.vanta_buffer)):
                self._continue(conn)
                chunk = sock.recv(_RECV_BYTES)
                if not chunk:
                    self._drop(conn)
                    return
                conn.vanta_buffer += chunk
        except (BlockingIOError, ssl.SSLWantReadError):
            self._watch(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(conn, selectors.EVENT_WRITE)
            return
        except OSError:  # ssl.SSLError included: a failed handshake ends the connection
            self._drop(conn)
            return
        del self._gathering[conn]
        data = bytes(conn.vanta_buffer)
        del conn.vanta_buffer
        if conn.parser is None:
            conn.parser = gunicorn_http.get_parser(self.cfg, sock, conn.client)
        conn.parser.unreader.unread(data)
        conn.data_ready = True  # no waiting for data in the thread: it is all here
        conn.vanta_whole = True
        self.enqueue_req(conn)

    @staticmethod
    def _continue(conn: Any) -> None:
        """A client that waits for "100 Continue" before its body gets it here, and the
        Expect line leaves the request (gunicorn would say it again)."""
        head = _head(bytes(conn.vanta_buffer))
        if head is None or head[3] < 0:
            return
        start = head[3]
        end = conn.vanta_buffer.find(b"\r\n", start) + 2
        del conn.vanta_buffer[start:end]
        conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _watch(self, conn: Any, events: int) -> None:
        self.poller.register(conn.sock, events, partial(self._gather, conn))
        conn.vanta_watched = True

    def _unwatch(self, conn: Any) -> None:
        if getattr(conn, "vanta_watched", False):
            self.poller.unregister(conn.sock)
            conn.vanta_watched = False

    def _drop(self, conn: Any) -> None:
        self._unwatch(conn)
        self._gathering.pop(conn, None)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c, deadline in self._gathering.items() if deadline <= now]:
            self._drop(conn)


_ERROR_CODES = {413: "payload_too_large", 500: "internal_error"}


def write_error(sock: Any, status: int, reason: str, message: str) -> None:
    """What gunicorn answers a request it cannot parse, in the broker's error shape. Its
    own page quotes the offending header or request line back, which may hold a token:
    this one says only that the request was malformed."""
    code = _ERROR_CODES.get(status, "bad_request" if status < 500 else "internal_error")
    text = "internal error" if status >= 500 else "malformed request"
    body = b'{"error":{"code":"%s","message":"%s"},"request_id":null}' % (
        code.encode(),
        text.encode(),
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nServer: vanta-broker\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


def _log_filter(record: logging.LogRecord) -> bool:
    """Drop the arbiter's empty "Listening at:" line (with reuse_port it holds no socket; the
    when_ready hook says where the workers listen), and keep gunicorn from logging the text
    of a malformed request: it quotes the offending header line or request line, which may
    hold a token. The reason stays; the quoted text is withheld."""
    message = record.msg
    if not isinstance(message, str):
        return True
    if message == "Listening at: %s (%s)":
        return isinstance(record.args, tuple) and bool(record.args and record.args[0])
    if message.startswith("Invalid request from ip="):
        cut = min((i for i in (message.find("'"), message.find('"')) if i >= 0), default=-1)
        if cut >= 0:
            record.msg = message[:cut] + "<withheld>"
    return True


def _tls_context(conf: Any, default_factory: Any) -> ssl.SSLContext:
    """gunicorn's context, with TLS 1.2 as the floor."""
    context = default_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def serve(config: Config, options: ServeOptions) -> None:
    import gunicorn.http.wsgi
    from gunicorn.app.base import BaseApplication

    gunicorn.http.wsgi.SERVER = "vanta-broker"  # name no framework or version
    gunicorn_util.write_error = write_error  # and quote nothing of a malformed request
    logging.getLogger("gunicorn.error").addFilter(_log_filter)
    tls: dict[str, Any] = {}
    if options.certfile:
        tls = {
            "certfile": options.certfile,
            "keyfile": options.keyfile,
            "ssl_context": _tls_context,
            "do_handshake_on_connect": True,  # a missing client certificate fails here
        }
        if options.client_ca:
            tls.update(ca_certs=options.client_ca, cert_reqs=ssl.CERT_REQUIRED)
    settings: dict[str, Any] = {
        **tls,
        "bind": options.address,
        "workers": options.workers,
        "threads": options.threads,
        "worker_class": PatientWorker,  # keep-alive connections; slow clients in the loop
        "accesslog": None,
        "loglevel": "info",
        "keepalive": 5,
        "graceful_timeout": 10,
        "control_socket_disable": True,  # no runtime-control socket in $HOME
        # Room for the longest token the broker checks itself (then a JSON 401);
        # longer header lines get gunicorn's 431.
        "limit_request_field_size": 16384,
        # Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads new
        # connections over the workers; on one shared socket, the first worker awake
        # takes a burst of keep-alive connections alone (measured: 16 of 16).
        "reuse_port": options.port != 0,
    }
    if options.port != 0:  # the arbiter holds no socket then, so its own "Listening at:" is empty
        settings["when_ready"] = lambda arbiter: arbiter.log.info(
            "Listening at: %s://%s", options.scheme, options.address
        )

    class Application(BaseApplication):
        def load_config(self) -> None:
            for key, value in settings.items():
                if key in self.cfg.settings:  # settings vary across gunicorn versions
                    self.cfg.set(key, value)

        def load(self) -> Any:
            app = load_app(config, options.access_log)
            return with_client_cert(app) if options.client_ca else app

    logging.getLogger("vanta.broker").info(
        "serving on gunicorn (it hands client certificates to the broker): %s://%s, %d workers",
        options.scheme,
        options.address,
        options.workers,
    )
    Application().run()
