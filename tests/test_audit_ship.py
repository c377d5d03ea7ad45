"""`vanta-cli audit ship`: verified rotated files to S3 (moto's server), never the live one."""

from __future__ import annotations

import itertools
import json

import boto3
import pytest
import requests
from click.testing import CliRunner
from moto.server import ThreadedMotoServer
from support.brokers import free_port

from broker.audit.log import AuditLog, canonical, record_hash, rotated_files
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


# -- an hourly job: shipping again and again ------------------------------------------------


def versions(s3) -> dict[str, int]:
    """How many times each object was uploaded (the bucket keeps every version)."""
    found: dict[str, int] = {}
    for version in s3.list_object_versions(Bucket=BUCKET).get("Versions", []):
        found[version["Key"]] = found.get(version["Key"], 0) + 1
    return found


@pytest.fixture
def versioned(s3):
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return s3


def output_lines(result, verb: str) -> list[str]:
    return [
        line[len(verb) :].split()[0] for line in result.stdout.splitlines() if line.startswith(verb)
    ]


def test_an_hourly_job_ships_each_file_once_with_and_without_delete_after(versioned, tmp_path):
    live = tmp_path / "access.jsonl"
    log = AuditLog(live, max_bytes=1024)
    write_records(log, 30)
    first = rotated_files(live)
    assert ship(live).exit_code == 0  # hour 1: everything so far
    write_records(log, 30)  # hour 2: more rotations, the first files still on disk
    second = [p for p in rotated_files(live) if p not in first]
    assert second
    result = ship(live)
    assert result.exit_code == 0, result.output
    assert output_lines(result, "already shipped:") == [f"vanta/{p.name}" for p in first]
    assert output_lines(result, "uploaded:") == [f"vanta/{p.name}" for p in second]
    result = ship(live)  # hour 3: nothing new
    assert result.exit_code == 0, result.output
    assert output_lines(result, "uploaded:") == []
    assert len(output_lines(result, "already shipped:")) == len(first + second)
    result = ship(live, "--delete-after")  # hour 4: the job now cleans up
    assert result.exit_code == 0, result.output
    assert output_lines(result, "uploaded:") == [] and rotated_files(live) == []
    write_records(log, 30)  # hour 5: the chain continues from the bucket
    third = rotated_files(live)
    assert third
    result = ship(live, "--delete-after")
    assert result.exit_code == 0, result.output
    assert output_lines(result, "uploaded:") == [f"vanta/{p.name}" for p in third]
    result = ship(live, "--delete-after")  # hour 6: nothing at all
    assert result.exit_code == 0 and "nothing to ship" in result.output
    names = [p.name for p in first + second + third]
    assert versions(versioned) == {f"vanta/{name}": 1 for name in names}  # each uploaded once
    # the archive is one chain from the very first record
    archive = tmp_path / "archive"
    archive.mkdir()
    for name in names:
        versioned.download_file(BUCKET, f"vanta/{name}", str(archive / name))
    verified = CliRunner().invoke(cli, ["audit", "verify", *(str(archive / n) for n in names)])
    assert verified.exit_code == 0, verified.output


def test_a_changed_copy_of_a_shipped_file_uploads_nothing(versioned, tmp_path):
    live = tmp_path / "access.jsonl"
    log = AuditLog(live, max_bytes=1024)
    write_records(log, 30)
    shipped = rotated_files(live)
    assert ship(live).exit_code == 0
    write_records(log, 30)  # new files wait to be shipped
    pending = [p for p in rotated_files(live) if p not in shipped]
    assert pending
    before = versions(versioned)
    lines = shipped[0].read_text().splitlines(keepends=True)
    shipped[0].write_text("".join(lines[:1] + lines[2:]))  # a record removed after shipping
    result = ship(live)
    assert result.exit_code == 1
    assert f"{shipped[0].name}: line 2" in result.output
    assert versions(versioned) == before  # the pending files were not uploaded either


def test_a_shipped_file_rewritten_as_a_whole_chain_is_refused(versioned, tmp_path):
    """Recomputing the hashes makes the local file a valid chain: only the bucket's
    last-hash tells, and the bucket's copy is not overwritten."""
    live = tmp_path / "access.jsonl"
    write_records(AuditLog(live, max_bytes=1024), 30)
    newest = rotated_files(live)[-1]
    assert ship(live).exit_code == 0
    before = versions(versioned)
    lines = newest.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[-1])
    record["status"] = 200  # the last request now "succeeded"
    record["hash"] = record_hash(record)
    newest.write_bytes(b"".join(lines[:-1]) + canonical(record) + b"\n")
    assert CliRunner().invoke(cli, ["audit", "verify", str(newest), "--after",
                                    json.loads(lines[0])["prev_hash"]]).exit_code == 0  # fmt: skip
    result = ship(live)
    assert result.exit_code == 1
    assert result.output == (
        f"error: not shipped: {newest.name}: the bucket's copy ends at last-hash "
        f"{json.loads(lines[-1])['hash'][:16]}…, this file at {record['hash'][:16]}…: one of "
        "them was changed (nothing uploaded)\n"
    )
    assert versions(versioned) == before
