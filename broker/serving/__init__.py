"""Serving: the broker app on a production WSGI server, granian by default and gunicorn when
clients authenticate with certificates. One module per server behind `run`; nothing
outside this package knows which one answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.config import Config

SERVERS = ("granian", "gunicorn")


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    workers: int
    threads: int
    certfile: str | None = None
    keyfile: str | None = None
    client_ca: str | None = None
    access_log: bool = False

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.certfile else "http"


def load_app(config: Config, access_log: bool = False) -> Any:
    """The broker's WSGI app, built in the worker process that serves it."""
    from broker.web.app import create_app

    return create_app(config, access_log=access_log)


def run(server: str, config: Config, options: ServeOptions) -> None:
    """Serve until told to stop (SIGTERM or SIGINT)."""
    if server == "granian":
        from broker.serving.granian_server import serve
    else:
        from broker.serving.gunicorn_server import serve
    serve(config, options)
