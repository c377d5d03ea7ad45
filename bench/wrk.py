"""Drive a server with wrk (Debian's package) and read back what it measured."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_LATENCY = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class WrkResult:
    rate: float  # requests per second
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


def available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    threads: int = 2,
    headers: dict[str, str] | None = None,
) -> WrkResult:
    """One wrk run: `connections` keep-alive connections for `seconds` (wrk's own bound)."""
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    latency = {p: float(v) * _UNITS[u] for p, v, u in _LATENCY.findall(out)}
    non_2xx = _NON_2XX.search(out)
    sockets = _SOCKET.search(out)
    rate = _RATE.search(out)
    if rate is None or "50" not in latency or "99" not in latency:
        raise RuntimeError(f"could not read wrk's report:\n{out}")
    return WrkResult(
        rate=float(rate.group(1)),
        p50_ms=latency["50"],
        p99_ms=latency["99"],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
    )
