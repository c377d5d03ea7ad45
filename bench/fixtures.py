"""What the benchmark runs against: a fresh age key, a Git repository of real SOPS files
in a temporary directory, tokens, and a real `vanta-broker serve` on a loopback port."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.agekeys import generate_age_key  # noqa: E402

from broker.config import Keyring, SecretValue, default_sops_bin  # noqa: E402
from broker.scope import PERMISSIONS, Scope  # noqa: E402
from broker.tokens.claims import MintRequest, mint  # noqa: E402

SIGNING_KEY = "bench-signing-key-0123456789-abcdefghijklmnop"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}
START_TIMEOUT_SECONDS = 30


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
        check=True,
    )
    return proc.stdout.strip()


@dataclass
class BenchRepo:
    """A Git repository with `.sops.yaml` and `secrets/<env>.enc.yaml`, and the age key."""

    path: Path
    key_file: Path
    sops_bin: str

    @property
    def secrets_dir(self) -> Path:
        return self.path / "secrets"

    def file(self, environment: str) -> Path:
        return self.secrets_dir / f"{environment}.enc.yaml"

    def encrypt(self, environment: str, data: dict[str, Any]) -> None:
        relpath = f"secrets/{environment}.enc.yaml"
        proc = subprocess.run(
            [
                self.sops_bin,
                "encrypt",
                "--filename-override",
                relpath,
                "--input-type",
                "json",
                "--output-type",
                "yaml",
                "/dev/stdin",
            ],
            input=json.dumps(data).encode(),
            capture_output=True,
            cwd=self.path,
            check=True,
        )
        self.file(environment).write_bytes(proc.stdout)

    def commit(self, message: str) -> str:
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "-m", message)
        return git(self.path, "rev-parse", "HEAD")

    def decrypt_seconds(self, environment: str, extra_env: dict[str, str] | None = None) -> float:
        """Wall time of one `sops decrypt` of this environment's file fed on stdin, as a
        user would run it (the broker also sets GOGC: pass `extra_env` to match)."""
        data = self.file(environment).read_bytes()
        started = time.perf_counter()
        subprocess.run(
            [
                self.sops_bin,
                "decrypt",
                "--input-type",
                "yaml",
                "--output-type",
                "json",
                "/dev/stdin",
            ],
            input=data,
            capture_output=True,
            env={**os.environ, "SOPS_AGE_KEY_FILE": str(self.key_file), **(extra_env or {})},
            check=True,
        )
        return time.perf_counter() - started


def long_history_repo(repo: BenchRepo, environment: str, key: str, commits: int) -> str:
    """`commits` commits to one environment's file in a new branch of `repo`, each with its
    own blob (its own `lastmodified`, as every `sops set` writes); `key` changes (through the
    real `sops set`) ten times along the way. Built with `git fast-import`: seconds, not the
    minutes that many sops runs would take. Returns the newest commit."""
    path = repo.file(environment)
    env = {**os.environ, "SOPS_AGE_KEY_FILE": str(repo.key_file)}
    variants = []
    for i in range(10):
        subprocess.run(
            [repo.sops_bin, "set", str(path), f'["{key}"]', f'"value-{i}"'],
            env=env,
            capture_output=True,
            check=True,
        )
        variants.append(path.read_bytes())
    git(repo.path, "checkout", "-q", "--", str(path))
    relpath = path.relative_to(repo.path).as_posix()
    stream = bytearray()
    for n in range(commits):
        stamp = f'lastmodified: "2026-01-01T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"'
        blob = re.sub(rb'lastmodified: "[^"]*"', stamp.encode(), variants[n * 10 // commits])
        message = f"{environment}: commit {n}".encode()
        stream += b"commit refs/heads/history\n"
        stream += b"mark :%d\ncommitter Bench <bench@example.com> %d +0000\n" % (
            n + 1,
            1_767_225_600 + n * 60,
        )
        stream += b"data %d\n%s\n" % (len(message), message)
        if n:
            stream += b"from :%d\n" % n
        stream += b"M 100644 inline %s\ndata %d\n%s\n" % (relpath.encode(), len(blob), blob)
    subprocess.run(
        ["git", "-C", str(repo.path), "fast-import", "--quiet"],
        input=bytes(stream),
        env={**os.environ, **GIT_ENV},
        check=True,
    )
    return git(repo.path, "rev-parse", "history")


def make_repo(workdir: Path) -> BenchRepo:
    """An empty secrets repository whose `.sops.yaml` encrypts to a fresh age key."""
    key = generate_age_key()
    key_file = workdir / "identity.txt"
    key_file.write_text(f"# bench identity\n{key.identity}\n")
    key_file.chmod(0o600)
    path = workdir / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / ".sops.yaml").write_text(
        "creation_rules:\n"
        f"  - path_regex: (^|/)secrets/[^/]+\\.enc\\.yaml$\n    age: {key.recipient}\n"
    )
    (path / "secrets").mkdir()
    return BenchRepo(path, key_file, default_sops_bin())


def keyring() -> Keyring:
    return Keyring(((None, SecretValue(SIGNING_KEY)),))


def make_token(
    environment: str = "*",
    usage_limit: int | None = None,
    ttl_minutes: int = 60,
    permissions: tuple[str, ...] = PERMISSIONS,
) -> str:
    request = MintRequest("bench", Scope(environment, "*", permissions), ttl_minutes, usage_limit)
    token, _ = mint(request, keyring(), issuer="vanta-vault", audience="vanta-vault-api")
    return token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Broker:
    """A running `vanta-broker serve`; `stop()` ends it (and its workers)."""

    port: int
    process: subprocess.Popen[bytes]
    state_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def check(self) -> None:
        """Raise OSError when the broker (its master process) is no longer running."""
        if self.process.poll() is not None:
            raise OSError(f"vanta-broker exited with status {self.process.returncode}")

    def log_tail(self, lines: int = 40) -> str:
        text = (self.state_dir / "broker.log").read_text(errors="replace")
        return "\n".join(["--- broker log (last lines) ---", *text.splitlines()[-lines:]])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Served:
    """A plain WSGI app on gunicorn's sync worker (the anchor, the seed design)."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_sync_app(
    target: str, path: str, workers: int = 2, extra_env: dict[str, str] | None = None
) -> Served:
    """`gunicorn --worker-class sync` serving `target` ("module:app" in this directory) and
    answering 200 at `path` before returning."""
    port = free_port()
    gunicorn = Path(sys.executable).parent / "gunicorn"
    process = subprocess.Popen(
        [
            str(gunicorn),
            "--worker-class",
            "sync",
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{port}",
            "--chdir",
            str(Path(__file__).resolve().parent),
            "--log-level",
            "warning",
            target,
        ],
        env={**os.environ, **(extra_env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    served = Served(port, process)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn serving {target} exited")
        try:
            with urllib.request.urlopen(f"{served.url}{path}", timeout=5) as answer:
                if answer.status == 200:
                    return served
        except OSError:
            pass
        time.sleep(0.05)
    served.stop()
    raise RuntimeError(f"gunicorn serving {target} did not start in time")


def broker_command() -> list[str]:
    script = Path(sys.executable).parent / "vanta-broker"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "broker"]


def start_broker(
    repo: BenchRepo,
    state_dir: Path,
    *,
    workers: int = 2,
    threads: int | None = None,
    decrypt_cache: bool = True,
    extra_env: dict[str, str] | None = None,
) -> Broker:
    """Start `vanta-broker serve` on a free loopback port and wait for /healthz."""
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    port = free_port()
    env = {
        **os.environ,
        "VANTA_JWT_SECRET_KEY": SIGNING_KEY,
        "VANTA_SOPS_FILES_PATH": str(repo.secrets_dir),
        "VANTA_AUDIT_LOG": str(state_dir / "audit.jsonl"),
        "VANTA_STATE_DB": str(state_dir / "broker.db"),
        "SOPS_AGE_KEY_FILE": str(repo.key_file),
        "VANTA_DECRYPT_CACHE": "on" if decrypt_cache else "off",
        **(extra_env or {}),
    }
    log = (state_dir / "broker.log").open("wb")
    command = [*broker_command(), "serve", "--port", str(port), "--workers", str(workers)]
    if threads is not None:
        command += ["--threads", str(threads)]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    broker = Broker(port, process, state_dir)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((state_dir / "broker.log").read_text(errors="replace"))
        try:
            with urllib.request.urlopen(f"{broker.url}/healthz", timeout=1) as answer:
                if answer.status == 200 and len(broker.worker_pids()) >= workers:
                    return broker
        except OSError:
            pass
        time.sleep(0.05)
    broker.stop()
    raise RuntimeError("the broker did not start in time")
