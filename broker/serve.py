"""`vanta-broker serve`: the broker on gunicorn, one app per worker process."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import sys
from typing import Any

import click

from broker.config import Config, ConfigError

DEFAULT_THREADS = 4


def _make_app(config: Config) -> Any:
    from broker.app import create_app

    return create_app(config)


class _Gunicorn:  # built lazily so `--help` does not import gunicorn
    @staticmethod
    def run(config: Config, options: dict[str, Any]) -> None:
        import gunicorn.http.wsgi
        from gunicorn.app.base import BaseApplication

        gunicorn.http.wsgi.SERVER = "vanta-broker"  # name no framework or version

        class Application(BaseApplication):
            def load_config(self) -> None:
                for key, value in options.items():
                    if key in self.cfg.settings:  # settings vary across gunicorn versions
                        self.cfg.set(key, value)

            def load(self) -> Any:
                return _make_app(config)

        Application().run()


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
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the broker with gunicorn.

    Configuration comes from VANTA_* variables (see README). Example:

      VANTA_JWT_SECRET_KEY=... SOPS_AGE_KEY_FILE=keys/dev.agekey vanta-broker serve --port 8200
    """
    try:
        config = Config.from_env(os.environ)
    except ConfigError as exc:
        click.echo(f"vanta-broker: {exc}", err=True)
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
        _make_app(config)
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        click.echo(f"vanta-broker: cannot start: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    _Gunicorn.run(
        config,
        {
            "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread" if threads > 1 else "sync",
            "accesslog": None,
            "loglevel": "info",
            "keepalive": 5,
            "graceful_timeout": 10,
            "control_socket_disable": True,  # no runtime-control socket in $HOME
        },
    )
