"""`vanta-broker serve`: the broker on gunicorn, one app per worker process."""

from __future__ import annotations

import atexit
import ipaddress
import logging
import os
import shutil
import socket
import ssl
import sys
import tempfile
from typing import Any

import click

from broker.config import Config, ConfigError

# Two threads per worker: a read waiting on sops (a cold or VANTA_DECRYPT_CACHE=off read)
# does not stall the worker, and fewer threads queue fewer requests behind one GIL, which
# keeps tail latency down (measured on 2 cores: p99 at 16 connections fell from 4 to 2 threads).
DEFAULT_THREADS = 2


def _make_app(config: Config, background: bool = True) -> Any:
    from broker.app import create_app

    return create_app(config, background=background)


def _gunicorn_log_filter(record: logging.LogRecord) -> bool:
    """Drop the arbiter's empty "Listening at:" line (with reuse_port it holds no socket; the
    when_ready hook says where the workers listen), and keep gunicorn from logging the text
    of a malformed request: it quotes the offending header line or request line, which may
    hold a token. The reason stays; the quoted text is withheld."""
    message = record.msg
    if not isinstance(message, str):
        return True
    if message == "Listening at: %s (%s)":
        return bool(record.args and record.args[0])
    if message.startswith("Invalid request from ip="):
        cut = min((i for i in (message.find("'"), message.find('"')) if i >= 0), default=-1)
        if cut >= 0:
            record.msg = message[:cut] + "<withheld>"
    return True


class _Gunicorn:  # built lazily so `--help` does not import gunicorn
    @staticmethod
    def run(config: Config, options: dict[str, Any]) -> None:
        import gunicorn.http.wsgi
        from gunicorn.app.base import BaseApplication

        gunicorn.http.wsgi.SERVER = "vanta-broker"  # name no framework or version
        logging.getLogger("gunicorn.error").addFilter(_gunicorn_log_filter)

        class Application(BaseApplication):
            def load_config(self) -> None:
                for key, value in options.items():
                    if key in self.cfg.settings:  # settings vary across gunicorn versions
                        self.cfg.set(key, value)

            def load(self) -> Any:
                return _make_app(config)

        Application().run()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _port_taken(host: str, port: int) -> str | None:
    """Why the address cannot be bound, or None. The workers bind with SO_REUSEPORT, which
    would let them share a port with another broker; a plain bind first refuses a port that
    anything listens on already."""
    try:
        infos = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror:
        return "the address does not resolve"
    family, kind, proto, _, address = infos[0]
    probe = socket.socket(family, kind, proto)
    try:
        probe.setsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
        )  # as gunicorn: TIME_WAIT is fine
        probe.bind(address)
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else "the address cannot be bound"
    finally:
        probe.close()
    return None


def _tls_context(conf: Any, default_factory: Any) -> ssl.SSLContext:
    """gunicorn's context, with TLS 1.2 as the floor."""
    context = default_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@click.group()
def main() -> None:
    """Vanta Vault broker."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8200, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="Worker processes."
)
@click.option(
    "--threads",
    default=DEFAULT_THREADS,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Threads per worker.",
)
@click.option("--certfile", type=click.Path(dir_okay=False), help="TLS certificate chain (PEM).")
@click.option("--keyfile", type=click.Path(dir_okay=False), help="TLS private key (PEM).")
@click.option(
    "--client-ca",
    type=click.Path(dir_okay=False),
    help="CA (PEM) that must have signed every client's certificate (mutual TLS).",
)
@click.option(
    "--insecure-http",
    is_flag=True,
    help="Allow plain HTTP on a non-loopback address (behind a TLS-terminating proxy).",
)
def serve(
    host: str,
    port: int,
    workers: int,
    threads: int,
    certfile: str | None,
    keyfile: str | None,
    client_ca: str | None,
    insecure_http: bool,
) -> None:
    """Serve the broker with gunicorn.

    Configuration comes from VANTA_* variables (see README). TLS flags override
    VANTA_TLS_CERT, VANTA_TLS_KEY and VANTA_TLS_CLIENT_CA. Without TLS it listens
    only on loopback unless --insecure-http is given. Examples:

    \b
      VANTA_JWT_SECRET_KEY=... SOPS_AGE_KEY_FILE=keys/dev.agekey vanta-broker serve --port 8200

      vanta-broker serve --host 0.0.0.0 --certfile broker.pem --keyfile broker-key.pem \
          --client-ca clients-ca.pem
    """
    try:
        config = Config.from_env(os.environ)
    except ConfigError as exc:
        click.echo(f"vanta-broker: {exc}", err=True)
        sys.exit(1)
    certfile = certfile or config.tls_cert
    keyfile = keyfile or config.tls_key
    client_ca = client_ca or config.tls_client_ca
    if bool(certfile) != bool(keyfile):
        click.echo("vanta-broker: TLS needs both --certfile and --keyfile", err=True)
        sys.exit(2)
    if client_ca and not certfile:
        click.echo("vanta-broker: --client-ca needs --certfile and --keyfile", err=True)
        sys.exit(2)
    if not certfile and not insecure_http and not _is_loopback(host):
        click.echo(
            f"vanta-broker: refusing plain HTTP on non-loopback address {host}: secrets would "
            "cross the network unencrypted; give --certfile/--keyfile, or --insecure-http "
            "behind a TLS-terminating proxy",
            err=True,
        )
        sys.exit(2)
    if port != 0 and (reason := _port_taken(host, port)) is not None:
        click.echo(f"vanta-broker: cannot listen on {host}:{port}: {reason}", err=True)
        sys.exit(1)
    # prometheus_client chooses multiprocess mode when it is imported, from this variable:
    # a fresh private directory, set before the app (and so any worker) imports it.
    metrics_dir = tempfile.mkdtemp(prefix="vanta-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s [%(process)d] %(name)s %(levelname)s %(message)s"
    )
    # Open the stores once in the master so a broken state or audit path stops start-up here.
    try:
        _make_app(config, background=False)
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        click.echo(f"vanta-broker: cannot start: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    tls: dict[str, Any] = {}
    if certfile:
        tls = {
            "certfile": certfile,
            "keyfile": keyfile,
            "ssl_context": _tls_context,
            "do_handshake_on_connect": True,  # a missing client certificate fails here
        }
        if client_ca:
            tls.update(ca_certs=client_ca, cert_reqs=ssl.CERT_REQUIRED)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    options: dict[str, Any] = {
        **tls,
        "bind": address,
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",  # keep-alive connections, even with one thread
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
        "reuse_port": port != 0,
    }
    if port != 0:  # the arbiter holds no socket then, so its own "Listening at:" is empty
        scheme = "https" if certfile else "http"
        options["when_ready"] = lambda arbiter: arbiter.log.info(
            "Listening at: %s://%s", scheme, address
        )
    _Gunicorn.run(config, options)
