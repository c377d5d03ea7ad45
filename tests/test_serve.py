"""`vanta-broker serve`: one listening port per broker, connections spread over workers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from conftest import broker_env, start_broker, stop_broker


def serve(config, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", "serve", "--port", str(port)],
        env=broker_env(config),
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_refused(result: subprocess.CompletedProcess[str], port: int) -> None:
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"vanta-broker: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_a_port_another_program_listens_on_is_refused_in_one_line(config):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert_refused(serve(config, port), port)


def test_a_second_broker_cannot_share_a_running_brokers_port(config, tmp_path):
    # The workers listen with SO_REUSEPORT; without the check a second broker (another
    # repository, another key) would silently take half of the first one's connections.
    first = start_broker(config, tmp_path)
    try:
        port = urlsplit(first.url).port
        assert port is not None
        assert_refused(serve(config, port), port)
    finally:
        stop_broker(first)


def worker_pids(broker_pid: int) -> list[int]:
    children = Path(f"/proc/{broker_pid}/task/{broker_pid}/children").read_text()
    return [int(pid) for pid in children.split()]


def socket_inodes(port: int, state: str, peers: set[int] | None = None) -> set[str]:
    """Inodes of the sockets on local `port` in TCP `state` ("01" established, "0A" listen),
    only those connected to one of the `peers` ports when given."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        peer_port = int(fields[2].split(":")[1], 16)
        if local_port == port and fields[3] == state and (peers is None or peer_port in peers):
            inodes.add(fields[9])
    return inodes


def sockets_held(pid: int, inodes: set[str]) -> int:
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:[") and target[8:-1] in inodes:
            held += 1
    return held


def both_listening(pids: list[int], port: int) -> bool:
    listening = socket_inodes(port, "0A")
    return len(pids) == 2 and all(sockets_held(pid, listening) for pid in pids)


def test_a_burst_of_keep_alive_connections_is_spread_over_the_workers(config, tmp_path):
    broker = start_broker(config, tmp_path, workers=2)
    port = urlsplit(broker.url).port
    assert port is not None
    clients = []
    try:
        deadline = time.monotonic() + 30
        while not both_listening(pids := worker_pids(broker.process.pid), port):
            assert time.monotonic() < deadline, "two workers never listened"
            time.sleep(0.05)  # polled: each worker opens its own listening socket
        for _ in range(16):  # all open before any request, as a connection pool does
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        for client in clients:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: vault\r\n\r\n")
        for client in clients:
            assert client.recv(4096).startswith(b"HTTP/1.1 200 ")
        inodes = socket_inodes(port, "01", {client.getsockname()[1] for client in clients})
        held = [sockets_held(pid, inodes) for pid in pids]
        assert sum(held) == 16
        # On one shared listening socket the first worker awake took all 16 (measured);
        # per-worker sockets let the kernel spread them (all on one: p = 2 / 2**16).
        assert min(held) >= 1, held
    finally:
        for client in clients:
            client.close()
        stop_broker(broker)


def test_the_log_says_where_the_broker_listens(config, tmp_path):
    # Workers bind their own sockets, so gunicorn's arbiter has none to name.
    broker = start_broker(config, tmp_path, workers=1)
    stop_broker(broker)
    lines = broker.log().splitlines()
    listening = [line for line in lines if "Listening at" in line]
    assert len(listening) == 1 and listening[0].endswith(f"Listening at: {broker.url}")
