"""The broker on granian: a Rust HTTP server that reads requests and holds slow or idle
connections without a Python thread, and calls the WSGI app once a request is whole."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from broker.config import Config
from broker.serving import ServeOptions, load_app

# A client gets this long to send a request's headers; granian holds it meanwhile in Rust.
HEADER_READ_TIMEOUT_MS = 10_000
# How long a stopping worker lets requests in flight finish.
GRACEFUL_SECONDS = 10


def serve(config: Config, options: ServeOptions) -> None:
    from granian.constants import HTTPModes, Interfaces, SSLProtocols
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    tls: dict[str, Any] = {}
    if options.certfile:
        tls = {
            "ssl_cert": Path(options.certfile),
            "ssl_key": Path(options.keyfile or ""),
            "ssl_protocol_min": SSLProtocols.tls12,  # granian's own floor is TLS 1.3
        }
    server = Server(
        "vanta-broker",  # a name only: the app comes from the loader below
        address=options.host.strip("[]"),
        port=options.port,
        interface=Interfaces.WSGI,
        workers=options.workers,
        blocking_threads=options.threads,
        http=HTTPModes.http1,
        websockets=False,
        http1_settings=HTTP1Settings(header_read_timeout=HEADER_READ_TIMEOUT_MS),
        log_level=LogLevels.info,
        log_access=False,  # the broker writes its own line per request, if asked to
        respawn_failed_workers=True,  # as gunicorn's arbiter does
        workers_kill_timeout=GRACEFUL_SECONDS,
        **tls,
    )
    logging.getLogger("vanta.broker").info(
        "serving on granian: %s://%s, %d workers", options.scheme, options.address, options.workers
    )
    # The loader runs in each worker; a partial of module-level names survives any start
    # method (fork today; spawn pickles it).
    server.serve(
        target_loader=functools.partial(load_app, config, options.access_log), wrap_loader=False
    )
