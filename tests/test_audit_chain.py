"""The hash-chained audit trail (SPEC §7, §10, §17): whole records from many processes, a
chain that continues across restarts and files, and `vanta-cli audit verify`."""

from __future__ import annotations

import gc
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from support.brokers import read_audit, start_broker, stop_broker
from support.tokens import bearer, make_token

from broker.audit.log import GENESIS, AuditLog, canonical, record_hash
from broker.audit.verify import ChainBroken, verify_chain
from broker.config import Config
from broker.web.app import create_app
from cli.commands.audit import audit as audit_group

WRITERS = 6
RECORDS_PER_WRITER = 150
PAYLOAD_BYTES = 24 * 1024  # far past PIPE_BUF and a page: interleaving would show


def ten_line_verifier(paths: list[Path], start: str = GENESIS) -> int:
    """SPEC §10's "ten lines of any language", using nothing of the broker's code."""
    prev, count = start, 0
    for path in paths:
        for line in path.read_bytes().splitlines():
            record = json.loads(line)
            body = {k: v for k, v in record.items() if k != "hash"}
            text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            assert record["prev_hash"] == prev
            assert hashlib.sha256(text.encode("utf-8")).hexdigest() == record["hash"]
            prev, count = record["hash"], count + 1
    return count


def produce_trail(config: Config, requests_made: int = 8) -> Path:
    """A real audit file, written by the broker app answering a mix of requests."""
    client = create_app(config).test_client()
    token = make_token(config, environment="dev", subject="Zoë ☃ (ops)")
    for i in range(requests_made):
        if i % 4 == 0:
            client.get("/api/v1/vault/dev/PORT", headers=bearer(token))
        elif i % 4 == 1:
            client.get("/api/v1/vault/prod/API_KEY", headers=bearer(token))
        elif i % 4 == 2:
            client.get("/api/v1/vault/dev/PORT", headers=bearer("garbage"))
        else:
            client.get("/api/v1/nowhere/ünïcode")
    return config.audit_log


def verify_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "vanta-cli"), "audit", "verify", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def rechained(record: dict, prev_hash: str) -> bytes:
    """A forged record that is valid on its own and chains to `prev_hash`."""
    forged = {k: v for k, v in record.items() if k != "hash"}
    forged["prev_hash"] = prev_hash
    forged["hash"] = record_hash(forged)
    return canonical(forged) + b"\n"


# -- what the broker writes ------------------------------------------------------------------


def test_every_record_carries_prev_hash_and_hash_and_anyone_can_check_them(config):
    path = produce_trail(config)
    records = read_audit(config)
    assert len(records) == 8
    assert records[0]["prev_hash"] == GENESIS
    assert all(len(r["hash"]) == 64 for r in records)
    assert ten_line_verifier([path]) == 8
    # Non-ASCII text is written as itself (ensure_ascii=False), and the line is canonical.
    assert "Zoë ☃ (ops)".encode() in path.read_bytes()
    for line in path.read_bytes().splitlines():
        assert canonical(json.loads(line)) == line


def test_the_chain_continues_across_restarts(config):
    produce_trail(config, 4)
    last = read_audit(config)[-1]["hash"]

    produce_trail(config, 4)  # a new app, as after a restart

    records = read_audit(config)
    assert records[4]["prev_hash"] == last
    assert verify_chain([config.audit_log]).records == 8


def test_a_partial_line_left_by_a_killed_writer_is_dropped_and_the_chain_goes_on(config):
    produce_trail(config, 3)
    whole = config.audit_log.read_bytes()
    last = read_audit(config)[-1]["hash"]
    with config.audit_log.open("ab") as f:
        f.write(b'{"event":"secret.read","hash":"ab')  # the write a kill cut short
    with pytest.raises(ChainBroken):
        verify_chain([config.audit_log])

    produce_trail(config, 2)

    data = config.audit_log.read_bytes()
    assert data.startswith(whole) and b'"hash":"ab\n' not in data
    assert read_audit(config)[3]["prev_hash"] == last
    assert verify_chain([config.audit_log]).records == 5


def _append_many(path: str, writer: int, barrier) -> None:  # runs in a child process
    log = AuditLog(Path(path))
    payload = f"w{writer}-" * (PAYLOAD_BYTES // 4)
    barrier.wait()
    for i in range(RECORDS_PER_WRITER):
        log.append({"event": "request", "writer": writer, "n": i, "payload": payload})
        os.sched_yield()  # let a waiting writer take the lock now and then


def _hammer(path: Path) -> int:
    """WRITERS processes append to `path` at once; checks the file and returns how often
    consecutive records came from different writers."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WRITERS)
    processes = [
        context.Process(target=_append_many, args=(str(path), w, barrier)) for w in range(WRITERS)
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=300)
        assert p.exitcode == 0

    summary = verify_chain([path])
    assert summary.records == WRITERS * RECORDS_PER_WRITER
    assert ten_line_verifier([path]) == WRITERS * RECORDS_PER_WRITER
    seen: dict[int, list[int]] = {w: [] for w in range(WRITERS)}
    writers_in_order = []
    for line in path.read_bytes().splitlines():
        record = json.loads(line)
        assert record["payload"] == f"w{record['writer']}-" * (PAYLOAD_BYTES // 4)
        seen[record["writer"]].append(record["n"])
        writers_in_order.append(record["writer"])
    assert all(ns == list(range(RECORDS_PER_WRITER)) for ns in seen.values())
    return sum(a != b for a, b in zip(writers_in_order, writers_in_order[1:], strict=False))


def test_records_from_many_processes_are_whole_and_form_one_chain(tmp_path):
    # Every attempt must hold; an attempt counts once the writers really ran at the same
    # time (their records alternate), which a busy machine may not grant the first time.
    for attempt in range(3):
        switches = _hammer(tmp_path / f"attempt-{attempt}" / "access.jsonl")
        if switches > WRITERS:
            break
    assert switches > WRITERS


def test_a_real_broker_with_several_workers_keeps_one_chain_across_a_restart(config, tmp_path):
    token = make_token(config, environment="dev")

    def load(url: str) -> list[int]:
        def fetch(i: int) -> int:
            target = "/api/v1/vault/dev/PORT" if i % 3 else "/api/v1/vault/prod/API_KEY"
            return requests.get(url + target, headers=bearer(token), timeout=30).status_code

        with ThreadPoolExecutor(max_workers=24) as pool:
            return list(pool.map(fetch, range(120)))

    for _ in range(2):  # the second broker continues the first one's chain
        broker = start_broker(config, tmp_path, workers=4)
        try:
            assert sorted(set(load(broker.url))) == [200, 403]
        finally:
            stop_broker(broker)
    assert verify_chain([config.audit_log]).records == 240
    assert ten_line_verifier([config.audit_log]) == 240


# -- vanta-cli audit verify: intact chains ---------------------------------------------------


def test_verify_exits_0_on_an_intact_chain(config):
    path = produce_trail(config)
    r = verify_cli(str(path))
    assert r.returncode == 0, r.stderr
    last = read_audit(config)[-1]["hash"]
    assert "8 records" in r.stdout and last in r.stdout and r.stderr == ""


def test_verify_accepts_an_empty_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert verify_cli(str(empty)).returncode == 0


def split_trail(config: Config, tmp_path: Path, sizes: list[int]) -> list[Path]:
    """The broker's chain cut into consecutive files of `sizes` records (as rotation does)."""
    lines = lines_of(produce_trail(config, sum(sizes)))
    files, start = [], 0
    for i, size in enumerate(sizes):
        part = tmp_path / f"access.jsonl.2026010{i}T000000.000Z"
        rewrite(part, lines[start : start + size])
        files.append(part)
        start += size
    return files


def test_verify_checks_several_files_as_one_chain(config, tmp_path):
    files = split_trail(config, tmp_path, [3, 4, 5])
    assert verify_cli(*map(str, files)).returncode == 0
    # Out of order, a file missing: the break is named in the file where it shows.
    r = verify_cli(str(files[0]), str(files[2]), str(files[1]))
    assert r.returncode == 1 and r.stderr.startswith(f"{files[2]}: line 1: ")
    r = verify_cli(str(files[0]), str(files[2]))
    assert r.returncode == 1 and r.stderr.startswith(f"{files[2]}: line 1: ")


def test_lines_are_counted_within_each_file(config, tmp_path):
    files = split_trail(config, tmp_path, [3, 4, 5])
    lines = lines_of(files[1])
    rewrite(files[1], lines[:2] + lines[3:])  # remove its third line
    r = verify_cli(*map(str, files))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[0].startswith(f"{files[1]}: line 3: ")


def test_after_starts_the_chain_at_an_archived_hash(config, tmp_path):
    files = split_trail(config, tmp_path, [3, 4])
    shipped_last = json.loads(lines_of(files[0])[-1])["hash"]
    r = verify_cli(str(files[1]))
    assert r.returncode == 1 and r.stderr.startswith(f"{files[1]}: line 1: ")
    assert "start of the chain" in r.stderr
    assert verify_cli("--after", shipped_last, str(files[1])).returncode == 0
    assert verify_cli("--after", shipped_last.upper(), str(files[1])).returncode == 0
    r = verify_cli("--after", "1" * 64, str(files[1]))
    assert r.returncode == 1 and f"{files[1]}: line 1: " in r.stderr


@pytest.mark.parametrize("after", ["abc", "g" * 64, "0" * 63, ""])
def test_a_malformed_after_is_a_usage_error(config, after):
    path = produce_trail(config, 2)
    assert verify_cli("--after", after, str(path)).returncode == 2


def test_verify_needs_existing_files(tmp_path):
    assert verify_cli().returncode == 2
    assert verify_cli(str(tmp_path / "missing.jsonl")).returncode == 2


# -- canonical JSON ----------------------------------------------------------------------------

_JSON_TEXT = st.text(st.characters(codec="utf-8"))  # any code point a record can hold
_AUDIT_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | _JSON_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_JSON_TEXT, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_JSON_TEXT, _AUDIT_VALUES, max_size=8))
def test_canonical_json_is_byte_for_byte_what_json_dumps_writes(record):
    # The chain's hashes are defined by the json.dumps form; orjson must write the same bytes.
    expected = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical(record) == expected.encode("utf-8")


# -- vanta-cli audit verify: each kind of tampering --------------------------------------------


def changed_value(lines: list[bytes]) -> list[bytes]:
    record = json.loads(lines[4])
    record["outcome"] = "success" if record["outcome"] != "success" else "denied"
    return lines[:4] + [canonical(record) + b"\n"] + lines[5:]


def changed_and_rehashed(lines: list[bytes]) -> list[bytes]:
    record = json.loads(lines[4])
    record["subject"] = "someone-else"
    return lines[:4] + [rechained(record, record["prev_hash"])] + lines[5:]


def reformatted(lines: list[bytes]) -> list[bytes]:
    record = json.loads(lines[4])
    return lines[:4] + [json.dumps(record, sort_keys=True).encode() + b"\n"] + lines[5:]


def duplicate_key(lines: list[bytes]) -> list[bytes]:
    # A reader that keeps the first of two equal keys would see "denied".
    return lines[:4] + [lines[4].replace(b"{", b'{"outcome":"denied",', 1)] + lines[5:]


def removed(lines: list[bytes]) -> list[bytes]:
    return lines[:4] + lines[5:]


def inserted(lines: list[bytes]) -> list[bytes]:
    previous = json.loads(lines[3])
    forged = dict(json.loads(lines[4]), subject="forged")
    return lines[:4] + [rechained(forged, previous["hash"])] + lines[4:]


def repeated(lines: list[bytes]) -> list[bytes]:
    return lines[:5] + [lines[4]] + lines[5:]


def swapped(lines: list[bytes]) -> list[bytes]:
    return lines[:4] + [lines[5], lines[4]] + lines[6:]


def blank(lines: list[bytes]) -> list[bytes]:
    return lines[:4] + [b"\n"] + lines[4:]


def garbage(lines: list[bytes]) -> list[bytes]:
    return lines[:4] + [b"not json at all\n"] + lines[5:]


def cut_short(lines: list[bytes]) -> list[bytes]:
    return lines + [lines[4][:40]]


def invalid_utf8(lines: list[bytes]) -> list[bytes]:
    return lines[:4] + [lines[4].replace(b'"event"', b'"ev\xff\xfent"')] + lines[5:]


def huge_integer(lines: list[bytes]) -> list[bytes]:
    # Valid JSON, but past what any broker writes (orjson cannot even encode it back).
    return (
        lines[:4]
        + [lines[4].replace(b'"status":', b'"status":1' + b"0" * 30 + b',"s":', 1)]
        + lines[5:]
    )


def first_forged(lines: list[bytes]) -> list[bytes]:
    # A whole new first record that starts at 64 zeros: the old first no longer chains.
    return [rechained(dict(json.loads(lines[0]), subject="forged"), GENESIS)] + lines


@pytest.mark.parametrize(
    "tamper, line, reason",
    [
        (changed_value, 5, "changed"),
        (changed_and_rehashed, 6, "rewritten"),
        (reformatted, 5, "canonical"),
        (duplicate_key, 5, "canonical"),
        (removed, 5, "removed"),
        (inserted, 5, "inserted"),
        (repeated, 6, "repeat"),
        (swapped, 5, "prev_hash"),
        (blank, 5, "empty"),
        (garbage, 5, "JSON"),
        (cut_short, 9, "unfinished"),
        (invalid_utf8, 5, "UTF-8"),
        (huge_integer, 5, "canonical"),
        (first_forged, 1, "inserted"),
    ],
)
def test_verify_names_the_first_bad_line(config, tamper, line, reason):
    path = produce_trail(config)
    rewrite(path, tamper(lines_of(path)))

    r = verify_cli(str(path))

    assert r.returncode == 1
    assert r.stderr.startswith(f"{path}: line {line}: "), r.stderr
    assert reason in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_changed_record_deeper_in_the_file_is_named_after_earlier_intact_ones(config):
    path = produce_trail(config, 20)
    lines = lines_of(path)
    record = json.loads(lines[16])
    record["status"] = 418
    rewrite(path, lines[:16] + [canonical(record) + b"\n"] + lines[17:])
    result = CliRunner().invoke(audit_group, ["verify", str(path)])
    assert result.exit_code == 1
    assert f"{path}: line 17: hash does not match the record" in result.output


def test_verify_reads_a_rotated_trail_the_broker_wrote(config, tmp_path):
    broker = start_broker(config, tmp_path, extra_env={"VANTA_AUDIT_MAX_BYTES": "2048"})
    try:
        for _ in range(30):
            requests.get(f"{broker.url}/api/v1/nowhere", timeout=10)
    finally:
        stop_broker(broker)
    audit = config.audit_log
    files = [*sorted(audit.parent.glob(audit.name + ".*")), audit]
    assert len(files) >= 3
    r = verify_cli(*map(str, files))
    assert r.returncode == 0 and "30 records" in r.stdout
    # Verifying only the newer files needs the hash the older ones ended at.
    shipped_last = json.loads(lines_of(files[0])[-1])["hash"]
    assert verify_cli(*map(str, files[1:])).returncode == 1
    assert verify_cli("--after", shipped_last, *map(str, files[1:])).returncode == 0


@pytest.mark.parametrize("tail", [b"[1,2]\n", b'{"hash": 5}\n', b'{"hash": "abc"}\n'])
def test_a_damaged_last_line_makes_requests_fail_closed_with_503(config, tail):
    client = create_app(config).test_client()
    client.get("/api/v1/nowhere")
    with config.audit_log.open("ab") as f:
        f.write(tail)
    r = client.get("/api/v1/nowhere")
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "audit_unavailable"


def test_an_audit_log_let_go_closes_its_file(tmp_path):
    # An app built and dropped (tests, an embedding program) must not keep its file open.
    path = tmp_path / "access.jsonl"

    def holding() -> list[str]:
        fds = Path("/proc/self/fd")
        return [fd.name for fd in fds.iterdir() if _target(fd) == str(path)]

    log = AuditLog(path)
    log.append({"event": "request"})
    assert len(holding()) == 1
    del log
    gc.collect()
    assert holding() == []


def _target(fd: Path) -> str:
    try:
        return fd.readlink().as_posix()
    except OSError:
        return ""
