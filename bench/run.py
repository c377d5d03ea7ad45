"""`make bench`: what a secret read costs, as ratios to what a Python team deploys.

Builds a fresh age key and a Git repository of real SOPS files in a temporary directory,
starts a real `vanta-broker serve` on a loopback port and drives it with wrk. The anchor
is a Flask "hello" on gunicorn's sync worker (2 workers), measured in the same run; the
seed design (one `sops decrypt --extract` process per request) is measured too. Every
throughput is printed as a ratio to the anchor: warm reads (unlimited and usage-limited
token), /healthz, VANTA_DECRYPT_CACHE=off; then the first read after a new commit against
one `sops decrypt`, 10,000 keys in one environment, the memory of a worker, and one key's
history over 1,000 commits. The machine is shared and noisy, so scenarios are interleaved
in rounds and ratios are taken within each round. Every run is bounded in time; nothing
leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import (  # noqa: E402
    BenchRepo,
    Broker,
    Served,
    long_history_repo,
    make_repo,
    make_token,
    start_broker,
    start_sync_app,
)
from procstat import cpu_seconds, memory  # noqa: E402
from wrk import WrkResult, available, run_wrk  # noqa: E402

from broker.store.history import clear_caches, key_history, stats  # noqa: E402
from broker.store.sops import SOPS_GOGC  # noqa: E402

SMALL_ENV, K100_ENV, K10K_ENV = "bench", "k100", "k10000"
READ_KEY = "DATABASE_URL"
WARM_ROUNDS = 6  # rounds of concurrent reads until every worker has decrypted
WARM_SECONDS = 0.25  # a read this fast was answered from the cache
HISTORY_COMMITS = 1_000


@dataclass
class Measured:
    """One scenario over all rounds: wrk's figures per round."""

    name: str
    results: list[WrkResult]
    server_cpu_us: list[float]

    @classmethod
    def empty(cls, name: str) -> Measured:
        return cls(name, [], [])

    def add(self, result: WrkResult, cpu_us: float) -> None:
        self.results.append(result)
        self.server_cpu_us.append(cpu_us)

    @property
    def throughputs(self) -> list[float]:
        return [r.rate for r in self.results]

    @property
    def throughput(self) -> float:
        return statistics.median(self.throughputs)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.results)

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.results)

    @property
    def errors(self) -> int:
        return sum(r.non_2xx + r.socket_errors for r in self.results)

    def row(self, anchor: Measured | None = None) -> str:
        cpu = statistics.median(self.server_cpu_us) if self.server_cpu_us else float("nan")
        ratio = f"{ratio_per_round(self, anchor):>7.2f}x" if anchor is not None else " " * 8
        return (
            f"  {self.name:<38} {self.throughput:>8.0f} {ratio} {self.p50_ms:>7.2f}"
            f" {self.p99_ms:>7.2f} {cpu:>9.0f}"
            + (f"   ({self.errors} non-2xx or socket errors!)" if self.errors else "")
        )


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.repo: BenchRepo = make_repo(workdir)
        self.reader = make_token()  # every environment, unlimited
        self.limited = make_token(usage_limit=10**12)

    # -- fixtures ---------------------------------------------------------------------
    def build_secrets(self) -> None:
        small = {READ_KEY: "postgres://app:s3cret@db/prod", "API_KEYS": {"openai": "sk-x"}}
        small.update({f"SETTING_{i:02d}": f"value-{i:02d}" for i in range(18)})
        self.repo.encrypt(SMALL_ENV, small)
        for env, count in ((K100_ENV, 100), (K10K_ENV, 10_000)):
            keys = {f"KEY_{i:05d}": f"value-{i:05d}-{'x' * 24}" for i in range(count)}
            self.repo.encrypt(env, {READ_KEY: "postgres://app:s3cret@db/prod", **keys})
        self.repo.commit("bench: secrets")

    def start(self, decrypt_cache: bool = True) -> Broker:
        return start_broker(
            self.repo,
            self.workdir / ("state" if decrypt_cache else "state-cache-off"),
            workers=self.args.workers,
            threads=self.args.threads,
            decrypt_cache=decrypt_cache,
        )

    # -- load ---------------------------------------------------------------------------
    def load(
        self, url: str, pids: list[int], token: str | None, seconds: float
    ) -> tuple[WrkResult, float]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        before = cpu_seconds(pids)
        result = run_wrk(url, connections=self.args.connections, seconds=seconds, headers=headers)
        spent = cpu_seconds(pids) - before
        return result, spent * 1e6 / max(result.rate * seconds, 1.0)

    def rounds(
        self, scenarios: dict[str, tuple[str, list[int], str | None, float]], count: int
    ) -> list[Measured]:
        """Each scenario once per round, in turn: (url, server pids, token, seconds)."""
        measured = {name: Measured.empty(name) for name in scenarios}
        for _ in range(count):
            for name, (url, pids, token, seconds) in scenarios.items():
                result, cpu_us = self.load(url, pids, token, seconds)
                measured[name].add(result, cpu_us)
        return list(measured.values())

    def warm(self, broker: Broker, environments: tuple[str, ...]) -> float:
        """Read each environment until every worker answers it from its cache: rounds of
        concurrent reads on fresh connections (which the workers share), until a round
        is all fast. Returns the slowest read seen (the first decrypt)."""
        slowest = 0.0
        for env in environments:
            path = f"/api/v1/vault/{env}/{READ_KEY}"
            for _ in range(WARM_ROUNDS):
                count = 4 * self.args.workers
                with ThreadPoolExecutor(max_workers=count) as pool:
                    times = list(pool.map(self.fresh_get, [broker] * count, [path] * count))
                slowest = max(slowest, *times)
                if max(times) < WARM_SECONDS:
                    break
        return slowest

    def fresh_get(self, broker: Broker, path: str) -> float:
        conn = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=120)
        try:
            return self.timed_get(conn, path)[0]
        finally:
            conn.close()

    # -- single requests ------------------------------------------------------------------
    def timed_get(self, conn: http.client.HTTPConnection, path: str) -> tuple[float, dict]:
        started = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": f"Bearer {self.reader}"})
        answer = conn.getresponse()
        body = answer.read()
        elapsed = time.perf_counter() - started
        if answer.status != 200:
            raise RuntimeError(f"GET {path}: {answer.status} {body[:200]!r}")
        return elapsed, json.loads(body)

    def first_reads_after_commit(self, broker: Broker) -> list[tuple[float, float]]:
        """(first read, one sops decrypt of the same file) for each of a few new commits."""
        conn = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=30)
        pairs = []
        try:
            for i in range(self.args.commits):
                value = f"postgres://app:rotated-{i}@db/prod"
                small = {READ_KEY: value, "API_KEYS": {"openai": "sk-x"}}
                small.update({f"SETTING_{j:02d}": f"value-{j:02d}" for j in range(18)})
                self.repo.encrypt(SMALL_ENV, small)
                sops = statistics.median(self.repo.decrypt_seconds(SMALL_ENV) for _ in range(3))
                sha = self.repo.commit(f"bench: rotate {READ_KEY} ({i})")
                elapsed, body = self.timed_get(conn, f"/api/v1/vault/{SMALL_ENV}/{READ_KEY}")
                if (body["version"], body["value"]) != (sha, value):
                    raise RuntimeError("the first read after a commit was not of that commit")
                pairs.append((elapsed, sops))
        finally:
            conn.close()
        return pairs

    def sequential_ms(self, broker: Broker, path: str, count: int) -> list[float]:
        conn = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=30)
        try:
            return [self.timed_get(conn, path)[0] * 1000 for _ in range(count)]
        finally:
            conn.close()


def history_ms(repo: BenchRepo) -> tuple[float, float, int, int]:
    """Cold and warm time of one key's history over a long history, its change count and
    the blobs parsed cold."""
    head = long_history_repo(repo, SMALL_ENV, READ_KEY, HISTORY_COMMITS)
    git_dir = str(repo.path / ".git")
    relpath = repo.file(SMALL_ENV).relative_to(repo.path).as_posix()
    clear_caches()
    started = time.perf_counter()
    found = len(key_history(git_dir, head, relpath, READ_KEY))
    cold = time.perf_counter() - started
    parsed = stats.blobs_parsed
    warm = []
    for _ in range(5):
        started = time.perf_counter()
        key_history(git_dir, head, relpath, READ_KEY)
        warm.append(time.perf_counter() - started)
    return cold * 1000, statistics.median(warm) * 1000, found, parsed


def ratio_per_round(numerator: Measured, denominator: Measured) -> float:
    return statistics.median(
        n / d for n, d in zip(numerator.throughputs, denominator.throughputs, strict=True) if d
    )


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="default: the broker's")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per scenario")
    parser.add_argument("--commits", type=int, default=7)
    args = parser.parse_args()
    if not available():
        print("make bench needs wrk (Debian's package wrk): apt-get install wrk", file=sys.stderr)
        return 1
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vanta-bench-") as tmp:
        report(Bench(args, Path(tmp)), args)
    print(f"\nbench finished in {time.monotonic() - started:.0f} s; load average {load_average()}")
    return 0


def report(bench: Bench, args: argparse.Namespace) -> None:
    print("Vanta Vault benchmark: a real `vanta-broker serve` on 127.0.0.1, driven by wrk")
    print(
        f"  {args.workers} workers each, {args.connections} keep-alive connections, "
        f"{args.rounds} interleaved rounds x {args.duration:.1f} s per scenario, "
        f"{os.cpu_count()} CPUs shared by the servers and wrk"
    )
    print(
        f"  load average at start: {load_average()} (other work on the machine skews all figures)"
    )
    bench.build_secrets()
    sops_small = statistics.median(bench.repo.decrypt_seconds(SMALL_ENV) for _ in range(5))
    sops_10k = bench.repo.decrypt_seconds(K10K_ENV)
    tuned = {"GOGC": SOPS_GOGC}
    tuned_small = statistics.median(bench.repo.decrypt_seconds(SMALL_ENV, tuned) for _ in range(5))
    tuned_10k = bench.repo.decrypt_seconds(K10K_ENV, tuned)
    print(
        f"  one `sops decrypt`: {sops_small * 1000:.1f} ms ({SMALL_ENV}, 20 keys, median of 5), "
        f"{sops_10k * 1000:.0f} ms ({K10K_ENV}, 10,001 keys); as the broker runs it "
        f"(GOGC={SOPS_GOGC}): {tuned_small * 1000:.1f} ms, {tuned_10k * 1000:.0f} ms"
    )

    read_path = f"/api/v1/vault/{SMALL_ENV}/{READ_KEY}"
    anchor: Served = start_sync_app("anchor_app:app", "/", args.workers)
    seed: Served = start_sync_app(
        "seed_app:app",
        read_path,
        args.workers,
        {
            "SEED_SECRETS_DIR": str(bench.repo.secrets_dir),
            "SEED_SOPS_BIN": bench.repo.sops_bin,
            "SOPS_AGE_KEY_FILE": str(bench.repo.key_file),
        },
    )
    broker = bench.start()
    try:
        bench.warm(broker, (SMALL_ENV,))
        broker.check()
        pids = broker.worker_pids()
        seconds = args.duration
        hello, healthz, read, limited, seeded = bench.rounds(
            {
                "anchor: Flask hello, gunicorn sync": (f"{anchor.url}/", [], None, seconds),
                "broker GET /healthz": (f"{broker.url}/healthz", pids, None, seconds),
                "warm read, unlimited token": (
                    f"{broker.url}{read_path}",
                    pids,
                    bench.reader,
                    seconds,
                ),
                "warm read, usage-limited token": (
                    f"{broker.url}{read_path}",
                    pids,
                    bench.limited,
                    seconds,
                ),
                "seed: one sops --extract a request": (f"{seed.url}{read_path}", [], None, seconds),
            },
            args.rounds,
        )
        memory_warm = [memory(pid) for pid in pids]
        first_10k = bench.warm(broker, (K100_ENV, K10K_ENV))
        memory_after = [memory(pid) for pid in pids]
        k100, k10k = bench.rounds(
            {
                "read, 100 keys in the environment": (
                    f"{broker.url}/api/v1/vault/{K100_ENV}/{READ_KEY}",
                    pids,
                    bench.reader,
                    seconds,
                ),
                "read, 10,000 keys in the environment": (
                    f"{broker.url}/api/v1/vault/{K10K_ENV}/{READ_KEY}",
                    pids,
                    bench.reader,
                    seconds,
                ),
            },
            max(2, args.rounds // 2),
        )
        list_10k = bench.sequential_ms(broker, f"/api/v1/vault/{K10K_ENV}?pattern=*", 30)
        list_100 = bench.sequential_ms(broker, f"/api/v1/vault/{K100_ENV}?pattern=*", 30)
        warm_one = bench.sequential_ms(broker, read_path, 30)
        first_reads = bench.first_reads_after_commit(broker)
    except (OSError, subprocess.CalledProcessError):
        print(broker.log_tail(), file=sys.stderr)
        raise
    finally:
        broker.stop()
        anchor.stop()
        seed.stop()

    cold = bench.start(decrypt_cache=False)
    try:
        (cache_off,) = bench.rounds(
            {
                "read, VANTA_DECRYPT_CACHE=off": (
                    f"{cold.url}{read_path}",
                    cold.worker_pids(),
                    bench.reader,
                    seconds,
                )
            },
            1,
        )
    finally:
        cold.stop()

    history_cold, history_warm, history_found, history_blobs = history_ms(bench.repo)

    print(f"\nthroughput and latency at {args.connections} connections (medians over rounds)")
    print(
        f"  {'scenario':<38} {'req/s':>8} {'/anchor':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'CPU us/req':>9}"
    )
    for measured in (hello, healthz, read, limited, seeded):
        print(measured.row(hello))
    for measured in (cache_off, k100, k10k):
        print(measured.row())
    first = statistics.median(elapsed for elapsed, _ in first_reads)
    first_ratio = statistics.median(elapsed / sops for elapsed, sops in first_reads)
    sops_then = statistics.median(sops for _, sops in first_reads)
    print(
        f"  first read after a new commit: median {first * 1000:.1f} ms over "
        f"{len(first_reads)} commits (one sops decrypt of the same file: "
        f"{sops_then * 1000:.1f} ms; a warm read on one connection: "
        f"p50 {statistics.median(warm_one):.2f} ms)"
    )
    print(
        f"  10,000 keys: list p50 {statistics.median(list_10k):.1f} ms, "
        f"max {max(list_10k):.1f} ms (100 keys: p50 {statistics.median(list_100):.1f} ms)"
    )
    print(f"  10,000 keys: first read (sops decrypt in the worker) {first_10k:.1f} s")
    print(
        f"  history of one key over {HISTORY_COMMITS:,} commits ({history_found} changes of "
        f"the key): {history_cold:.0f} ms cold ({history_blobs:,} blobs parsed), "
        f"{history_warm:.1f} ms warm (in process, no decryption)"
    )
    for i, (warm_mem, after) in enumerate(zip(memory_warm, memory_after, strict=True)):
        print(f"  worker {i + 1} memory: {warm_mem} warm; {after} with the 10,000-key document")

    read_ratio = ratio_per_round(read, hello)
    limited_ratio = ratio_per_round(limited, hello)
    seed_ratio = ratio_per_round(read, seeded)
    k10k_ratio = ratio_per_round(k10k, k100)
    errors = sum(m.errors for m in (healthz, read, limited, k100, k10k, cache_off))
    list_p50 = statistics.median(list_10k)
    rows = [
        ("warm read / anchor", f"{read_ratio:.2f}x", ">= 1.20x", read_ratio >= 1.2),
        ("usage-limited read / anchor", f"{limited_ratio:.2f}x", ">= 1.00x", limited_ratio >= 1),
        ("warm read p99", f"{read.p99_ms:.1f} ms", "<= 6 ms", read.p99_ms <= 6),
        ("warm read / seed design", f"{seed_ratio:.0f}x", ">= 50x", seed_ratio >= 50),
        ("broker non-2xx, socket errors", str(errors), "0", errors == 0),
        ("first read after commit / sops", f"{first_ratio:.3f}", "<= 1.20", first_ratio <= 1.2),
        (
            "10,000-key read / 100-key read",
            f"{k10k_ratio:.2f}",
            ">= 0.90 (no slower)",
            k10k_ratio >= 0.9,
        ),
        ("10,000-key list p50", f"{list_p50:.1f} ms", "< 50 ms", list_p50 < 50),
    ]
    print("\nratios (throughput ratios are medians of per-round ratios)")
    print(f"  {'measure':<34} {'value':>9}  {'target':<20} verdict")
    for name, value, target, ok in rows:
        print(f"  {name:<34} {value:>9}  {target:<20} {verdict(ok)}")


if __name__ == "__main__":
    sys.exit(main())
