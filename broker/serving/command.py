"""`vanta-broker serve`: options and checks, then the broker on a production WSGI server."""

from __future__ import annotations

import atexit
import ipaddress
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import click

from broker.config import Config, ConfigError, drop_secret_variables
from broker.serving import SERVERS, ServeOptions, run

# Threads per worker that run the app. Two: a read waiting on sops (a cold or
# VANTA_DECRYPT_CACHE=off read) does not stall the worker, and a body trickling in holds one
# of them at most (bodies are read in turns: broker.web.bodies); slow heads never take one
# (the server holds them until the head is whole).
DEFAULT_THREADS = 2


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def port_taken(host: str, port: int) -> str | None:
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
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        probe.bind(address)
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else "the address cannot be bound"
    finally:
        probe.close()
    return None


def _version() -> str:
    try:
        return version("vanta-vault")
    except PackageNotFoundError:
        return "unknown"


class _OneLineErrors(click.Group):
    """Usage errors in one line on stderr (`vanta-broker: ...`), exit 2."""

    def main(self, args: Sequence[str] | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        try:
            return super().main(args, standalone_mode=False, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            sys.exit(130)
        except click.UsageError as exc:
            click.echo(f"vanta-broker: {exc.format_message()}", err=True)
            sys.exit(2)


def _fail(message: str, code: int) -> None:
    click.echo(f"vanta-broker: {message}", err=True)
    sys.exit(code)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    _version(), "--version", prog_name="vanta-broker", message="%(prog)s %(version)s"
)
def main() -> None:
    """Vanta Vault broker: hands out secrets from SOPS files in Git against scoped tokens."""


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
    help="Threads per worker that run requests; with 2 or more, one stays free while a "
    "client trickles a request body.",
)
@click.option(
    "--server",
    "server_name",
    metavar="granian|gunicorn",
    help="The WSGI server. Default: granian; gunicorn with --client-ca (granian cannot hand "
    "the client certificate to the broker).",
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
@click.option(
    "--access-log", is_flag=True, help="Log one line per request (method, route, status, time)."
)
def serve(
    host: str,
    port: int,
    workers: int,
    threads: int,
    server_name: str | None,
    certfile: str | None,
    keyfile: str | None,
    client_ca: str | None,
    insecure_http: bool,
    access_log: bool,
) -> None:
    """Serve the broker.

    Configuration comes from VANTA_* variables (see README). TLS flags override
    VANTA_TLS_CERT, VANTA_TLS_KEY and VANTA_TLS_CLIENT_CA. Without TLS it listens
    only on loopback unless --insecure-http is given. Examples:

    \b
      VANTA_JWT_SECRET_KEY=... SOPS_AGE_KEY_FILE=keys/dev.agekey \\
          vanta-broker serve --port 8200
    \b
      vanta-broker serve --host 0.0.0.0 --certfile broker.pem \\
          --keyfile broker-key.pem --client-ca clients-ca.pem
    """
    if server_name is not None and server_name not in SERVERS:
        _fail(f"--server must be granian or gunicorn, not {server_name!r}", 2)
    try:
        config = Config.from_env(os.environ)
    except ConfigError as exc:
        _fail(str(exc), 1)
    certfile = certfile or config.tls_cert
    keyfile = keyfile or config.tls_key
    client_ca = client_ca or config.tls_client_ca
    if bool(certfile) != bool(keyfile):
        _fail("TLS needs both --certfile and --keyfile", 2)
    if client_ca and not certfile:
        _fail("--client-ca needs --certfile and --keyfile", 2)
    if client_ca and server_name == "granian":
        _fail(
            "granian cannot hand the client certificate to the broker, which records it in "
            "the audit: with --client-ca, leave out --server or use --server gunicorn",
            2,
        )
    server = server_name or ("gunicorn" if client_ca else "granian")
    if not certfile and not insecure_http and not _is_loopback(host):
        _fail(
            f"refusing plain HTTP on non-loopback address {host}: secrets would cross the "
            "network unencrypted; give --certfile/--keyfile, or --insecure-http behind a "
            "TLS-terminating proxy",
            2,
        )
    if port != 0 and (reason := port_taken(host, port)) is not None:
        _fail(f"cannot listen on {host}:{port}: {reason}", 1)
    # The signing keys and other secrets now live in `config` only: the servers copy the
    # process environment into places (granian: every request's WSGI environ) they must not be.
    drop_secret_variables(os.environ)
    # prometheus_client chooses multiprocess mode when it is imported, from this variable:
    # a fresh private directory, set before the app (and so any worker) imports it.
    metrics_dir = tempfile.mkdtemp(prefix="vanta-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s [%(process)d] %(name)s %(levelname)s %(message)s"
    )
    # Open the stores once here, so a broken state or audit path stops start-up at once.
    from broker.web.app import create_app

    try:
        create_app(config, background=False)
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        _fail(f"cannot start: {type(exc).__name__}: {exc}", 1)
    options = ServeOptions(
        host=host,
        port=port,
        workers=workers,
        threads=threads,
        certfile=certfile,
        keyfile=keyfile,
        client_ca=client_ca,
        access_log=access_log,
    )
    run(server, config, options)
