"""The decrypt cache: one sops run per Git blob, never a value from an older commit, one
sops process for concurrent first reads, bounded; VANTA_DECRYPT_CACHE=off decrypts every
read. sops runs are counted by a wrapper given as VANTA_SOPS_BIN that logs each start."""

from __future__ import annotations

import stat
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import requests
from support.brokers import start_broker, stop_broker
from support.repos import DEV_SECRETS, SOPS_BIN, SecretsRepo
from support.tokens import bearer, make_token

from broker.config import Config
from broker.errors import DecryptFailed
from broker.store.sops import Decryptor
from broker.web.app import create_app

POLL_DEADLINE_SECONDS = 30


@dataclass
class SopsWrapper:
    """A sops binary that logs each start, optionally waits for `release()`, then runs the
    real sops (or fails, with `fail`)."""

    path: Path
    log: Path
    gate: Path

    def starts(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def release(self) -> None:
        self.gate.touch()


def make_wrapper(directory: Path, *, hold: bool = False, fail: bool = False) -> SopsWrapper:
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = SopsWrapper(directory / "sops", directory / "starts.log", directory / "go")
    if not hold:
        wrapper.release()
    run = "exit 1" if fail else f'exec "{SOPS_BIN}" "$@"'
    wrapper.path.write_text(
        "#!/bin/sh\n"
        f'echo "$$" >> "{wrapper.log}"\n'
        "i=0\n"  # wait for the gate, bounded (3000 x 10 ms)
        f'while [ ! -e "{wrapper.gate}" ] && [ "$i" -lt 3000 ]; do sleep 0.01; i=$((i+1)); done\n'
        f"{run}\n"
    )
    wrapper.path.chmod(wrapper.path.stat().st_mode | stat.S_IXUSR)
    return wrapper


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + POLL_DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.005)


def all_inside(threads: list[threading.Thread], code: object) -> bool:
    """True when every thread is running `code` (somewhere on its stack)."""
    frames = sys._current_frames()
    for thread in threads:
        frame = frames.get(thread.ident or -1)
        while frame is not None and frame.f_code is not code:
            frame = frame.f_back
        if frame is None:
            return False
    return True


def read_value(url: str, token: str, key: str) -> dict:
    r = requests.get(f"{url}/api/v1/vault/prod/{key}", headers=bearer(token), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


# -- never a value from an older commit -----------------------------------------------------


def test_cache_never_serves_a_value_from_an_older_commit(
    config: Config, secrets_repo: SecretsRepo, tmp_path: Path
):
    broker = start_broker(config, tmp_path, workers=2)
    try:
        token = make_token(config)
        committed: dict[str, str] = {secrets_repo.commits[-1]: "prod-api-key"}
        stop = threading.Event()
        mismatches: list[tuple[str, str]] = []

        def keep_reading() -> None:
            with requests.Session() as session:
                for _ in range(5000):
                    if stop.is_set():
                        return
                    answer = session.get(
                        f"{broker.url}/api/v1/vault/prod/API_KEY", headers=bearer(token), timeout=30
                    ).json()
                    expected = committed.get(answer["version"])
                    if expected is not None and answer["value"] != expected:
                        mismatches.append((answer["version"], answer["value"]))

        readers = [threading.Thread(target=keep_reading) for _ in range(2)]
        for reader in readers:
            reader.start()
        original = secrets_repo.secrets_dir.joinpath("prod.enc.yaml").read_bytes()
        try:
            for value in ["v1", "v2", "prod-api-key", "v3"]:
                if value == "prod-api-key":  # a revert: the very blob cached before
                    secrets_repo.secrets_dir.joinpath("prod.enc.yaml").write_bytes(original)
                else:
                    secrets_repo.write("prod", {"DATABASE_URL": "x", "API_KEY": value})
                sha = secrets_repo.commit(f"secrets: rotate prod/API_KEY ({len(committed)})")
                committed[sha] = value
                for _ in range(8):  # both workers, each from the next request on
                    answer = read_value(broker.url, token, "API_KEY")
                    assert (answer["version"], answer["value"]) == (sha, value)
        finally:
            stop.set()
            for reader in readers:
                reader.join(timeout=60)
        assert mismatches == []
    finally:
        stop_broker(broker)


def test_in_process_reads_follow_each_commit_and_decrypt_each_blob_once(
    config: Config, secrets_repo: SecretsRepo
):
    app = create_app(config)
    client = app.test_client()
    token = make_token(config)
    decryptor = app.extensions["vanta"].store.decryptor
    for i in range(3):
        sha = secrets_repo.write_and_commit("prod", {"API_KEY": f"v{i}"}, f"secrets: v{i}")
        for _ in range(5):
            body = client.get("/api/v1/vault/prod/API_KEY", headers=bearer(token)).get_json()
            assert (body["version"], body["value"]) == (sha, f"v{i}")
    assert decryptor.decrypt_count == 3
    assert decryptor.cache_hits == 12


# -- concurrent first reads --------------------------------------------------------------------


def test_concurrent_first_reads_start_one_sops_process(config: Config, tmp_path: Path):
    wrapper = make_wrapper(tmp_path / "held", hold=True)
    app = create_app(replace(config, sops_bin=str(wrapper.path)))
    token = make_token(config)
    statuses: list[tuple[int, object]] = []

    def read() -> None:
        r = app.test_client().get("/api/v1/vault/dev/PORT", headers=bearer(token))
        statuses.append((r.status_code, r.get_json().get("value")))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        # Every reader is inside the decryptor while the first sops run is held open.
        wait_for(lambda: wrapper.starts() >= 1, "sops has started")
        wait_for(lambda: all_inside(threads, Decryptor.document.__code__), "all readers wait")
    finally:
        wrapper.release()
        for thread in threads:
            thread.join(timeout=60)
    assert statuses == [(200, 8080)] * 8
    assert wrapper.starts() == 1
    assert app.extensions["vanta"].store.decryptor.decrypt_count == 1


def test_concurrent_first_reads_on_a_real_broker_start_one_sops_per_worker(
    config: Config, tmp_path: Path
):
    wrapper = make_wrapper(tmp_path / "sops")
    broker = start_broker(
        config, tmp_path, workers=1, extra_env={"VANTA_SOPS_BIN": str(wrapper.path)}
    )
    try:
        token = make_token(config)
        url = f"{broker.url}/api/v1/vault/dev/DATABASE_URL"

        def fetch(_: int) -> tuple[int, str]:
            r = requests.get(url, headers=bearer(token), timeout=30)
            return r.status_code, r.json().get("value")

        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(fetch, range(16)))
        assert answers == [(200, DEV_SECRETS["DATABASE_URL"])] * 16
        assert wrapper.starts() == 1
    finally:
        stop_broker(broker)


def test_a_failed_decrypt_is_shared_by_concurrent_readers_and_not_cached(
    tmp_path: Path, age_key_file: Path
):
    wrapper = make_wrapper(tmp_path / "failing", hold=True, fail=True)
    decryptor = Decryptor(str(wrapper.path), age_key_file=str(age_key_file))
    failures: list[BaseException] = []

    def read() -> None:
        try:
            decryptor.document("blob-1", lambda: b"sops: {}\n")
        except DecryptFailed as exc:
            failures.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: wrapper.starts() >= 1, "sops has started")
        wait_for(lambda: all_inside(threads, Decryptor.document.__code__), "all readers wait")
    finally:
        wrapper.release()
        for thread in threads:
            thread.join(timeout=60)
    assert len(failures) == 4 and wrapper.starts() == 1
    with pytest.raises(DecryptFailed):
        decryptor.document("blob-1", lambda: b"sops: {}\n")
    assert wrapper.starts() == 2


# -- bounded ------------------------------------------------------------------------------------


def test_the_cache_is_bounded_by_entries_and_by_bytes(
    secrets_repo: SecretsRepo, age_key_file: Path
):
    blobs = {
        env: secrets_repo.secrets_dir.joinpath(f"{env}.enc.yaml").read_bytes()
        for env in ("dev", "prod")
    }
    by_entries = Decryptor(SOPS_BIN, age_key_file=str(age_key_file), max_entries=1)
    by_entries.document("dev", lambda: blobs["dev"])
    by_entries.document("prod", lambda: blobs["prod"])
    assert by_entries.cached_ids() == ["prod"]
    by_entries.document("dev", lambda: blobs["dev"])
    assert by_entries.decrypt_count == 3

    by_bytes = Decryptor(SOPS_BIN, age_key_file=str(age_key_file), max_bytes=1)
    by_bytes.document("dev", lambda: blobs["dev"])
    by_bytes.document("prod", lambda: blobs["prod"])
    assert by_bytes.cached_ids() == ["prod"]  # the newest stays, even over the bound
    assert by_bytes.document("prod", lambda: blobs["prod"])["API_KEY"] == "prod-api-key"
    assert by_bytes.decrypt_count == 2


# -- VANTA_DECRYPT_CACHE=off ----------------------------------------------------------------------


def test_cache_off_decrypts_every_read_and_keeps_nothing(
    secrets_repo: SecretsRepo, age_key_file: Path
):
    data = secrets_repo.secrets_dir.joinpath("dev.enc.yaml").read_bytes()
    decryptor = Decryptor(SOPS_BIN, cache=False, age_key_file=str(age_key_file))
    for _ in range(3):
        assert decryptor.document("dev", lambda: data)["PORT"] == 8080
    assert decryptor.decrypt_count == 3 and decryptor.cached_ids() == []


def test_cache_off_works_end_to_end_with_one_sops_run_per_read(
    config: Config, secrets_repo: SecretsRepo, tmp_path: Path
):
    wrapper = make_wrapper(tmp_path / "sops")
    broker = start_broker(
        replace(config, decrypt_cache=False),
        tmp_path,
        workers=2,
        extra_env={"VANTA_SOPS_BIN": str(wrapper.path)},
    )
    try:
        token = make_token(config, environment="prod", usage_limit=7)
        for _ in range(5):
            assert read_value(broker.url, token, "API_KEY")["value"] == "prod-api-key"
        assert wrapper.starts() == 5
        sha = secrets_repo.write_and_commit("prod", {"API_KEY": "rotated"}, "secrets: rotate")
        answer = read_value(broker.url, token, "API_KEY")
        assert (answer["version"], answer["value"]) == (sha, "rotated")
        assert wrapper.starts() == 6
        r = requests.post(
            f"{broker.url}/api/v1/vault/prod/batch",
            json={"keys": ["API_KEY"]},
            headers=bearer(token),
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["values"] == {"API_KEY": "rotated"}
        r = requests.get(
            f"{broker.url}/api/v1/vault/prod/API_KEY", headers=bearer(token), timeout=30
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "usage_exhausted"
    finally:
        stop_broker(broker)
