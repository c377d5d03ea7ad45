"""GET /api/v1/audit (SPEC §10): JSONL, filtered, streamed, from the live and rotated
files, only of the token's environment unless it is `*`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from support.brokers import read_audit, start_broker, stop_broker
from support.tokens import bearer, make_token

from broker.audit.log import AuditLog
from broker.audit.verify import verify_chain
from broker.config import Config
from broker.web.app import create_app

AUDIT = "/api/v1/audit"
ROOT_PERMS = ("secrets:read", "secrets:list", "tokens:issue", "audit:read")

# (ts, environment, subject, outcome): records an operator might hold
SEEDED = [
    ("2026-01-01T00:00:00.000Z", "prod", "billing-api", "success"),
    ("2026-01-01T06:00:00.000Z", "prod", "billing-api", "denied"),
    ("2026-01-01T12:00:00.000Z", "dev", "ci", "success"),
    ("2026-01-02T00:00:00.000Z", "dev", "billing-api", "error"),
    ("2026-01-02T12:00:00.000Z", None, None, "denied"),
    ("2026-01-03T00:00:00.000Z", "*", "root-admin", "success"),
    ("2026-01-03T00:00:00.001Z", "prod", "ci", "success"),
]


def seed(config: Config) -> None:
    log = AuditLog(config.audit_log)
    for i, (ts, environment, subject, outcome) in enumerate(SEEDED):
        log.append(
            {
                "ts": ts,
                "event": "secret.read",
                "request_id": f"seed-{i}",
                "environment": environment,
                "subject": subject,
                "outcome": outcome,
                "status": {"success": 200, "denied": 403, "error": 404}[outcome],
            }
        )


@pytest.fixture
def seeded(config: Config):
    seed(config)
    return create_app(config).test_client()


def export(client, token: str, **params):
    return client.get(AUDIT, query_string=params, headers=bearer(token))


def seeds(response) -> list[int]:
    """Which seeded records an export holds, by index."""
    assert response.status_code == 200, response.get_data(as_text=True)
    ids = []
    for line in response.get_data().splitlines():
        request_id = json.loads(line)["request_id"]
        if request_id.startswith("seed-"):
            ids.append(int(request_id[5:]))
    return ids


def test_export_gives_every_record_as_it_stands_in_the_file(seeded, config):
    root = make_token(config, permissions=ROOT_PERMS)
    on_disk = config.audit_log.read_bytes()

    r = export(seeded, root)

    assert r.status_code == 200
    assert r.mimetype == "application/x-ndjson"
    assert r.headers["Cache-Control"] == "no-store"
    assert r.get_data() == on_disk  # byte for byte: each line's hash can be checked


def test_the_export_is_audited_after_the_snapshot_it_gives(seeded, config):
    root = make_token(config, permissions=ROOT_PERMS, subject="auditor")
    r = export(seeded, root, environment="prod")
    assert b"audit.export" not in r.get_data()
    record = read_audit(config)[-1]
    assert record["event"] == "audit.export" and record["outcome"] == "success"
    assert record["subject"] == "auditor" and record["environment"] == "prod"
    assert record["request_id"] == r.headers["X-Request-Id"]


@pytest.mark.parametrize(
    "params, expected",
    [
        ({}, [0, 1, 2, 3, 4, 5, 6]),
        ({"environment": "prod"}, [0, 1, 6]),
        ({"environment": "dev"}, [2, 3]),
        ({"environment": "staging"}, []),
        ({"subject": "billing-api"}, [0, 1, 3]),
        ({"outcome": "denied"}, [1, 4]),
        ({"outcome": "error"}, [3]),
        ({"since": "2026-01-02T00:00:00Z"}, [3, 4, 5, 6]),  # since is inclusive
        ({"until": "2026-01-02T00:00:00Z"}, [0, 1, 2]),  # until is exclusive
        ({"since": "2026-01-01T06:00:00Z", "until": "2026-01-02T12:00:00Z"}, [1, 2, 3]),
        ({"since": "2026-01-03T00:00:00.0005Z"}, [6]),
        ({"since": "2026-01-02T01:00:00+01:00"}, [3, 4, 5, 6]),  # an offset is honoured
        ({"until": "2026-01-01t07:00:00.5-00:00"}, [0, 1]),
        ({"environment": "prod", "subject": "ci", "outcome": "success"}, [6]),
        (
            {"environment": "", "subject": "", "outcome": "", "since": "", "until": ""},
            [0, 1, 2, 3, 4, 5, 6],
        ),
    ],
)
def test_filters_select_records(seeded, config, params, expected):
    root = make_token(config, permissions=ROOT_PERMS)
    assert seeds(export(seeded, root, **params)) == expected


def test_a_token_of_one_environment_sees_only_that_environment(seeded, config):
    dev_auditor = make_token(
        config, environment="dev", key_pattern="X", permissions=("audit:read",)
    )
    assert seeds(export(seeded, dev_auditor)) == [2, 3]
    assert seeds(export(seeded, dev_auditor, environment="dev", outcome="error")) == [3]
    r = export(seeded, dev_auditor, environment="prod")
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "scope_denied"


def test_export_needs_audit_read(seeded, config):
    reader = make_token(config, permissions=("secrets:read", "secrets:list", "tokens:issue"))
    r = export(seeded, reader)
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "permission_denied"
    assert b"seed-" not in r.get_data()
    r = seeded.get(AUDIT)
    assert r.status_code == 401 and b"seed-" not in r.get_data()
    r = export(seeded, "eyJhbGciOiJub25lIn0.e30.")
    assert r.status_code == 401


@pytest.mark.parametrize(
    "params",
    [
        {"environment": "../prod"},
        {"environment": "Prod"},
        {"environment": "tokens"},
        {"environment": "*"},
        {"environment": "dev\x00"},
        {"outcome": "ok"},
        {"outcome": "SUCCESS"},
        {"subject": "x" * 129},
        {"subject": "a\nb"},
        {"since": "yesterday"},
        {"since": "2026-01-01"},  # a date alone
        {"since": "2026-01-01T00:00:00"},  # no offset
        {"since": "2026-13-01T00:00:00Z"},
        {"since": "2026-01-01T25:00:00Z"},
        {"until": "2026-01-01T00:00:00+2:00"},
        {"until": "1e400"},
        {"until": "2026-01-01T00:00:00Z\x00"},
    ],
)
def test_malformed_filters_are_400(seeded, config, params):
    root = make_token(config, permissions=ROOT_PERMS)
    r = export(seeded, root, **params)
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "bad_request"
    assert list(params)[0] in r.get_json()["error"]["message"]


def test_a_filter_given_twice_is_400(seeded, config):
    root = make_token(config, permissions=ROOT_PERMS)
    r = seeded.get(f"{AUDIT}?outcome=success&outcome=denied", headers=bearer(root))
    assert r.status_code == 400 and "outcome" in r.get_json()["error"]["message"]


def test_damaged_and_unfinished_lines_are_left_out_not_a_500(seeded, config):
    lines = config.audit_log.read_bytes().splitlines(keepends=True)
    damaged = b"this line is not JSON\n[1,2]\n\n\xff\xfe\n"
    config.audit_log.write_bytes(b"".join(lines[:3]) + damaged + b"".join(lines[3:]))
    with config.audit_log.open("ab") as f:
        f.write(b'{"request_id":"seed-99","environment":"prod"')  # a killed writer's half line
    root = make_token(config, permissions=ROOT_PERMS)
    assert seeds(export(seeded, root)) == [0, 1, 2, 3, 4, 5, 6]
    assert seeds(export(seeded, root, environment="prod")) == [0, 1, 6]


def test_export_reads_rotated_files_in_chain_order(config, tmp_path):
    config = replace(config, audit_max_bytes=1024)
    client = create_app(config).test_client()
    token = make_token(config, environment="dev")
    for _ in range(20):
        client.get("/api/v1/vault/dev/PORT", headers=bearer(token))
    rotated = sorted(config.audit_log.parent.glob(config.audit_log.name + ".*"))
    assert len(rotated) >= 3
    trail = b"".join(p.read_bytes() for p in [*rotated, config.audit_log])
    root = make_token(config, permissions=ROOT_PERMS)

    r = export(client, root)

    assert r.get_data() == trail
    exported = tmp_path / "exported.jsonl"
    exported.write_bytes(r.get_data())
    assert verify_chain([exported]).records == 20
    dev_only = export(client, root, environment="dev", outcome="success").get_data()
    assert len(dev_only.splitlines()) == 20


def test_a_large_trail_streams_from_the_real_broker(config, tmp_path):
    log = AuditLog(config.audit_log)
    for i in range(5000):
        environment = "prod" if i % 2 else "dev"
        log.append({"ts": "2026-02-01T00:00:00.000Z", "environment": environment, "n": i})
    broker = start_broker(config, tmp_path)
    try:
        root = make_token(config, permissions=ROOT_PERMS)
        with requests.get(
            f"{broker.url}{AUDIT}",
            params={"environment": "prod"},
            headers=bearer(root),
            stream=True,
            timeout=60,
        ) as r:
            assert r.status_code == 200
            assert "Content-Length" not in r.headers  # streamed, not built in memory
            assert r.headers["Content-Type"].startswith("application/x-ndjson")
            numbers = [json.loads(line)["n"] for line in r.iter_lines() if line]
        assert numbers == list(range(1, 5000, 2))
    finally:
        stop_broker(broker)


def test_records_appended_while_streaming_are_not_half_read(seeded, config):
    root = make_token(config, permissions=ROOT_PERMS)
    r = seeded.get(AUDIT, headers=bearer(root), buffered=False)
    body_iter = iter(r.response)
    # More records arrive before the answer is read: the snapshot was taken already.
    AuditLog(config.audit_log).append({"ts": "2026-03-01T00:00:00.000Z", "request_id": "late"})
    body = b"".join(body_iter)
    r.close()
    assert b'"late"' not in body and len(body.splitlines()) == len(SEEDED)


def test_export_of_an_empty_trail_is_empty(config: Config, tmp_path: Path):
    client = create_app(config).test_client()
    root = make_token(config, permissions=ROOT_PERMS)
    r = export(client, root)
    assert r.status_code == 200 and r.get_data() == b""
