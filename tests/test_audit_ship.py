"""`vanta-cli audit ship`: verified rotated files to S3 (moto's server), never the live one."""

from __future__ import annotations

import itertools
import json

import boto3
import pytest
import requests
from click.testing import CliRunner
from conftest import free_port
from moto.server import ThreadedMotoServer

from broker.audit import AuditLog, rotated_files
from cli.main import cli

BUCKET = "audit-archive"


@pytest.fixture
def s3(monkeypatch):
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # moto keeps its state per process: start each test from an empty account.
    requests.post(f"http://127.0.0.1:{port}/moto-api/reset", timeout=10)
    client = boto3.client("s3")
    client.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    yield client
    server.stop()


_clock = itertools.count()


def write_records(log: AuditLog, n: int) -> None:
    for _ in range(n):
        t = next(_clock)  # strictly increasing record times, as a real broker writes them
        ts = f"2026-11-23T{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}.000Z"
        log.append({"ts": ts, "event": "request", "status": 404})


def ship(live, *args):
    return CliRunner().invoke(
        cli, ["audit", "ship", "--to", f"s3://{BUCKET}/vanta/", "--audit-log", str(live), *args]
    )


def test_ships_each_rotated_file_with_its_last_hash_and_never_the_live_file(s3, tmp_path):
    live = tmp_path / "access.jsonl"
    log = AuditLog(live, max_bytes=1024)
    write_records(log, 40)
    rotated = rotated_files(live)
    assert len(rotated) >= 3
    result = ship(live)
    assert result.exit_code == 0, result.output
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert keys == [f"vanta/{p.name}" for p in rotated]
    for path in rotated:
        head = s3.head_object(Bucket=BUCKET, Key=f"vanta/{path.name}")
        last = json.loads(path.read_text().splitlines()[-1])["hash"]
        assert head["Metadata"]["last-hash"] == last
    assert all(p.exists() for p in rotated)  # kept without --delete-after


def test_delete_after_and_the_chain_continues_from_the_bucket(s3, tmp_path):
    live = tmp_path / "access.jsonl"
    log = AuditLog(live, max_bytes=1024)
    write_records(log, 30)
    first = rotated_files(live)
    assert ship(live, "--delete-after").exit_code == 0
    assert rotated_files(live) == []
    write_records(log, 30)  # more rotations: their chain starts where the shipped one ended
    second = rotated_files(live)
    assert second
    result = ship(live, "--delete-after")
    assert result.exit_code == 0, result.output
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {f"vanta/{p.name}" for p in first + second} == keys


def test_a_tampered_file_stops_the_shipment(s3, tmp_path):
    live = tmp_path / "access.jsonl"
    write_records(AuditLog(live, max_bytes=1024), 40)
    middle = rotated_files(live)[1]
    lines = middle.read_text().splitlines(keepends=True)
    middle.write_text("".join(lines[:1] + lines[2:]))
    result = ship(live)
    assert result.exit_code == 1
    assert f"{middle.name}: line 2" in result.output
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0
