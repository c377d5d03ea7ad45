"""The broker on granian: a Rust HTTP server that reads requests and holds slow or idle
connections without a Python thread, and calls the WSGI app once a request is whole."""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
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
        target_loader=functools.partial(load_worker, config, options.access_log),
        wrap_loader=False,
    )


def load_worker(config: Config, access_log: bool) -> Any:
    """The app, built in a granian worker's main thread before granian starts serving."""
    stop_on_the_first_signal()
    relay_signals_to_the_main_thread()
    return load_app(config, access_log)


def stop_on_the_first_signal() -> None:
    """granian's worker handler for SIGINT/SIGTERM puts "stop" in a channel with room for
    one, on the main thread, holding the GIL. A third signal before granian has taken the
    first blocks that handler, and granian needs the GIL to take it: the worker hung until
    the server killed it (Ctrl-C reaches every process of the terminal's group and the
    server then sends each worker SIGTERM; systemd signals a service's whole cgroup). And a
    signal that came while the app loaded met the server's handler, inherited through
    fork, and was lost. So a handler is set now, and the one granian sets after this
    loader asks to stop once, at the first signal, whenever it came."""
    import granian._signals as granian_signals
    from granian._granian import WorkerSignal

    stop = WorkerSignal()
    asked = armed = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal asked  # handlers run one at a time, on the main thread
        if not asked:
            asked = True
            if armed:
                stop.set()

    def set_sync_signals() -> Any:
        nonlocal armed
        armed = True
        if asked:
            stop.set()
        return stop

    granian_signals.set_main_signals(handler)
    granian_signals.set_sync_signals = set_sync_signals


# Interrupts the main thread's wait so that it runs the handlers of the signals caught.
_NUDGE = signal.SIGUSR2


def relay_signals_to_the_main_thread() -> None:
    """A granian worker waits for SIGINT or SIGTERM in its main thread, blocked on a lock,
    and stops when the handler set there runs. The kernel hands a signal sent to the process
    to any of its threads, one of granian's Rust threads among them; Python's handler then
    runs only once the main thread wakes, which an idle one never does, and the worker ran
    on until the server killed it GRACEFUL_SECONDS later. Python writes each signal it
    catches to a wakeup fd; a daemon thread reading it nudges the main thread, which then
    runs the pending handler."""
    reader, writer = os.pipe()  # plain descriptors: open as long as the worker lives
    os.set_blocking(writer, False)
    signal.signal(_NUDGE, lambda *_: None)  # a handler, so that the nudge interrupts the wait
    signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
    main = threading.main_thread().ident
    assert main is not None

    def relay() -> None:
        while caught := os.read(reader, 64):
            if any(signum != _NUDGE for signum in caught):
                signal.pthread_kill(main, _NUDGE)

    threading.Thread(target=relay, name="vanta-signal-relay", daemon=True).start()
