"""Real broker processes on loopback, and their audit trail."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from broker.config import Config

from .repos import SIGNING_KEY


def read_audit(config: Config) -> list[dict[str, Any]]:
    if not config.audit_log.exists():
        return []
    return [json.loads(line) for line in config.audit_log.read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broker_env(config: Config) -> dict[str, str]:
    env = {
        **os.environ,
        "VANTA_JWT_SECRET_KEY": SIGNING_KEY,
        "VANTA_SOPS_FILES_PATH": str(config.sops_files_path),
        "VANTA_AUDIT_LOG": str(config.audit_log),
        "VANTA_STATE_DB": str(config.state_db),
        "SOPS_AGE_KEY_FILE": str(config.sops_age_key_file),
        "VANTA_DECRYPT_CACHE": "on" if config.decrypt_cache else "off",
    }
    return env


@dataclass
class RunningBroker:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_broker(
    config: Config,
    tmp_path: Path,
    *,
    workers: int = 2,
    extra_env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    scheme: str = "http",
    health_kwargs: dict[str, Any] | None = None,
    own_process_group: bool = False,
) -> RunningBroker:
    port = free_port()
    log_path = tmp_path / f"broker-{port}.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "broker",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            *(extra_args or []),
        ],
        env={**broker_env(config), **(extra_env or {})},
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=own_process_group,  # as a terminal's foreground job is
    )
    url = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"broker exited: {log_path.read_text()}")
        try:
            r = requests.get(f"{url}/healthz", timeout=1, **(health_kwargs or {}))
            if r.status_code == 200:
                return RunningBroker(url, process, log_path)
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.05)  # a worker may listen before its app is loaded
    process.kill()
    raise RuntimeError("broker did not start")


def stop_broker(broker: RunningBroker) -> None:
    broker.process.send_signal(signal.SIGINT)  # gunicorn's quick shutdown
    try:
        broker.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        broker.process.kill()
        broker.process.wait()
