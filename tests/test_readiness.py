"""/readyz names exactly the parts that are not usable; /healthz stays a liveness check."""

from __future__ import annotations

from dataclasses import replace

from broker.web.app import create_app


def test_ready_when_everything_is_usable(client):
    r = client.get("/readyz")
    assert r.status_code == 200 and r.get_json() == {"status": "ready"}


def test_unreadable_key_file_and_unusable_audit_are_named_in_order(config, tmp_path):
    app = create_app(replace(config, sops_age_key_file=tmp_path / "missing-key.txt"))
    config.audit_log.unlink()
    config.audit_log.mkdir()  # the audit path now names a directory: nothing can be appended
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    assert r.get_json() == {"status": "unready", "failing": ["key", "audit"]}
    assert app.test_client().get("/healthz").status_code == 200


def test_audit_file_moved_away_is_reopened_not_lost(client, config):
    assert client.get("/api/v1/nowhere").status_code == 404
    config.audit_log.rename(config.audit_log.with_suffix(".old"))
    assert client.get("/api/v1/nowhere").status_code == 404
    assert len(config.audit_log.read_text().splitlines()) == 1


def test_sops_binary_that_cannot_run_is_named(config, tmp_path):
    app = create_app(replace(config, sops_bin=str(tmp_path / "no-sops")))
    r = app.test_client().get("/readyz")
    assert r.status_code == 503 and r.get_json() == {"status": "unready", "failing": ["key"]}
