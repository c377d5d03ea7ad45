"""The audit file rotates by size and the hash chain spans the files."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from support.brokers import start_broker, stop_broker
from support.tokens import bearer, make_token

from broker.audit.log import GENESIS


def chain_breaks(files: list[Path]) -> list[str]:
    """The SPEC's ten-line verifier, over several files as one chain."""
    problems, prev = [], GENESIS
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            record = json.loads(line)
            body = {k: v for k, v in record.items() if k != "hash"}
            canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            if (
                record["prev_hash"] != prev
                or hashlib.sha256(canon.encode()).hexdigest() != record["hash"]
            ):
                problems.append(f"{path.name}: line {n}")
            prev = record["hash"]
    return problems


def test_rotation_under_concurrent_load_keeps_one_chain(config, tmp_path):
    broker = start_broker(config, tmp_path, extra_env={"VANTA_AUDIT_MAX_BYTES": "4096"})
    try:
        token = make_token(config, environment="dev")
        url = f"{broker.url}/api/v1/vault/dev/PORT"
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(
                pool.map(
                    lambda _: requests.get(url, headers=bearer(token), timeout=30).status_code,
                    range(120),
                )
            )
        assert statuses == [200] * 120
    finally:
        stop_broker(broker)
    audit = config.audit_log
    rotated = sorted(audit.parent.glob(audit.name + ".*"))
    assert len(rotated) >= 3
    assert all(p.stat().st_size <= 4096 + 2048 for p in rotated)
    files = [*rotated, audit]
    assert chain_breaks(files) == []
    assert sum(len(p.read_text().splitlines()) for p in files) == 120
    # Each file's first record chains onto the previous file's last.
    for older, newer in zip(files, files[1:], strict=False):
        if newer.read_text():
            first = json.loads(newer.read_text().splitlines()[0])
            assert first["prev_hash"] == json.loads(older.read_text().splitlines()[-1])["hash"]
    # Times rise along the chain (stamped under the lock), so names sort in chain order.
    times = [json.loads(line)["ts"] for p in files for line in p.read_text().splitlines()]
    assert times == sorted(times)
    # Names carry the time of each file's first record.
    stamp = json.loads(rotated[0].read_text().splitlines()[0])["ts"]
    assert rotated[0].name.split(".", 2)[2].startswith(stamp[:10].replace("-", ""))


def test_removing_a_record_from_a_middle_file_is_found(config, tmp_path):
    broker = start_broker(config, tmp_path, extra_env={"VANTA_AUDIT_MAX_BYTES": "2048"})
    try:
        for _ in range(40):
            requests.get(f"{broker.url}/api/v1/nowhere", timeout=10)
    finally:
        stop_broker(broker)
    audit = config.audit_log
    files = [*sorted(audit.parent.glob(audit.name + ".*")), audit]
    assert len(files) >= 3 and chain_breaks(files) == []
    middle = files[1]
    lines = middle.read_text().splitlines(keepends=True)
    middle.write_text("".join(lines[:1] + lines[2:]))
    assert chain_breaks(files) == [f"{middle.name}: line 2"]
