"""The canary: secrets carry a unique marker; a broad scenario (reads, denials, errors,
the dashboard, CLI runs, Git edits) runs against a real broker; then the audit trail, the
broker's log, every answer that is not a deliberate secret read, the CLI's stderr and the
Git history are searched for the marker. Tokens and the signing key are searched for too.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import requests
from support.brokers import RunningBroker, start_broker, stop_broker
from support.repos import SIGNING_KEY, SecretsRepo, git, make_secrets_repo
from support.tokens import bearer, make_token

from broker.config import Config
from broker.scope import PERMISSIONS

MARKER = f"CANARY{uuid.uuid4().hex}"
VANTA_CLI = str(Path(sys.executable).parent / "vanta-cli")


def canary_values(tag: str) -> dict[str, object]:
    return {
        "DATABASE_URL": f"postgres://app:{MARKER}-{tag}@db/app",
        "DATABASE_USER": f"user-{MARKER}",
        "API_KEYS": {"openai": f"sk-{MARKER}-{tag}", "stripe": f"'quoted' \"{MARKER}\""},
        "MULTILINE": f"-----BEGIN KEY-----\n{MARKER}\n-----END KEY-----\n",
        "PORT": 8080,
    }


def variants(text: str) -> list[str]:
    """The text and the forms a careless encoder would turn it into."""
    raw = text.encode()
    forms = [text]
    for shift in range(3):
        encoded = base64.b64encode(b"xx"[:shift] + raw).decode()
        forms.append(encoded[4:-4])  # the part that does not depend on the neighbours
    return forms


def hits(text: str, needles: list[str]) -> list[str]:
    return [needle for needle in needles if needle and needle in text]


@dataclass
class Evidence:
    """Everything the scenario produced that must not hold a secret."""

    answers: list[tuple[str, str]] = field(default_factory=list)  # (label, headers + body)
    secret_answers: list[tuple[str, str]] = field(default_factory=list)
    cli_stderr: list[tuple[str, str]] = field(default_factory=list)
    cli_stdout: list[tuple[str, str]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)

    def answer(self, label: str, response: requests.Response, *, secret: bool = False) -> None:
        text = "\n".join(f"{k}: {v}" for k, v in response.headers.items()) + "\n" + response.text
        (self.secret_answers if secret else self.answers).append((label, text))
        if response.headers.get("Content-Type", "").startswith("application/json"):
            body = response.json()
            token = body.get("access_token") if isinstance(body, dict) else None
            if token:
                self.tokens.append(token)


@pytest.fixture
def canary_repo(tmp_path: Path, age_key) -> SecretsRepo:
    repo = make_secrets_repo(tmp_path / "canary-repo", age_key.recipient)
    repo.write("dev", canary_values("dev-v1"))
    repo.write("prod", canary_values("prod-v1"))
    repo.commit("secrets: add dev and prod")
    repo.write("dev", canary_values("dev-v2"))
    repo.commit("secrets: rotate dev")
    # An environment whose ciphertext was damaged: decryption fails.
    damaged = repo.write("broken", canary_values("broken"))
    text = damaged.read_text()
    data = re.search(r"ENC\[AES256_GCM,data:([A-Za-z0-9+/=]{8})", text)
    assert data is not None
    flipped = data.group(1)[::-1] if data.group(1)[::-1] != data.group(1) else "AAAAAAAA"
    damaged.write_text(text.replace(data.group(1), flipped, 1))
    repo.commit("secrets: add broken")
    return repo


@pytest.fixture
def canary_broker(
    config: Config, canary_repo: SecretsRepo, tmp_path: Path
) -> Iterator[tuple[Config, RunningBroker]]:
    cfg = replace(config, sops_files_path=canary_repo.secrets_dir)
    broker = start_broker(
        cfg, tmp_path, extra_env={"VANTA_AUDIT_MAX_BYTES": "16384"}, extra_args=["--access-log"]
    )
    try:
        yield cfg, broker
    finally:
        stop_broker(broker)


def run_cli(evidence: Evidence, label: str, args: list[str], env: dict[str, str], **kw):
    proc = subprocess.run(
        [VANTA_CLI, *args], env=env, capture_output=True, text=True, timeout=120, **kw
    )
    evidence.cli_stderr.append((label, proc.stderr))
    return proc


def test_no_secret_leaks_into_audit_logs_errors_or_cli_output(
    canary_broker, canary_repo: SecretsRepo, tmp_path: Path
):
    cfg, broker = canary_broker
    url = broker.url
    evidence = Evidence()
    root = make_token(cfg, permissions=PERMISSIONS, subject="canary-root")
    evidence.tokens.append(root)

    def get(path: str, token: str | None = None, **kw) -> requests.Response:
        return requests.get(url + path, headers=bearer(token) if token else {}, timeout=60, **kw)

    def post(path: str, token: str | None = None, **kw) -> requests.Response:
        return requests.post(url + path, headers=bearer(token) if token else {}, timeout=60, **kw)

    def mint(**wanted) -> str:
        body = {"subject": "canary-svc", "environment": "dev", "key_pattern": "*", **wanted}
        r = post("/api/v1/vault/tokens/generate", root, json=body)
        assert r.status_code == 201, r.text
        evidence.answer("generate", r)
        return r.json()["access_token"]

    reader = mint(permissions=["secrets:read", "secrets:list"])
    once = mint(key_pattern="DATABASE_URL", usage_limit=1)
    narrow = mint(key_pattern="DATABASE_*", permissions=["secrets:read"])
    narrow_lister = mint(key_pattern="DATABASE_*", permissions=["secrets:read", "secrets:list"])
    auditor = mint(permissions=["audit:read"])
    doomed = mint()
    expired = make_token(cfg, ttl_minutes=1)  # made to look old below
    evidence.tokens.append(expired)

    # -- deliberate secret reads: they must carry the marker (so the scan can see it) --
    old_commit = canary_repo.commits[0]
    for label, r in [
        ("read", get("/api/v1/vault/dev/DATABASE_URL", reader)),
        ("read nested", get("/api/v1/vault/dev/API_KEYS/stripe", reader)),
        ("read multiline", get("/api/v1/vault/dev/MULTILINE", reader)),
        ("read old", get(f"/api/v1/vault/dev/DATABASE_URL?version={old_commit}", reader)),
        ("read once", get("/api/v1/vault/dev/DATABASE_URL", once)),
        ("batch keys", post("/api/v1/vault/dev/batch", reader, json={"keys": ["DATABASE_URL"]})),
        ("batch pattern", post("/api/v1/vault/dev/batch", reader, json={"pattern": "*"})),
        ("prod read", get("/api/v1/vault/prod/API_KEYS/openai", root)),
    ]:
        assert r.status_code == 200 and MARKER in r.text, (label, r.status_code, r.text)
        assert r.headers["Cache-Control"] == "no-store"
        evidence.answer(label, r, secret=True)

    # -- everything else: names, denials, errors --
    revoked = post("/api/v1/vault/tokens/revoke-self", doomed)
    assert revoked.status_code == 200
    evidence.answer("revoke-self", revoked)
    stale = make_token(cfg, ttl_minutes=1)
    header, payload, _ = stale.split(".")
    requests_made = [
        ("healthz", get("/healthz")),
        ("readyz", get("/readyz")),
        ("metrics", get("/metrics")),
        ("openapi", get("/api/v1/openapi.json")),
        ("list", get("/api/v1/vault/dev?pattern=*", reader)),
        ("history", get("/api/v1/history/dev/DATABASE_URL", reader)),
        ("rotation", get("/api/v1/rotation?environment=dev", reader)),
        ("usage exhausted", get("/api/v1/vault/dev/DATABASE_URL", once)),
        ("revoked", get("/api/v1/vault/dev/DATABASE_URL", doomed)),
        ("other env", get("/api/v1/vault/prod/DATABASE_URL", reader)),
        ("other key", get("/api/v1/vault/dev/API_KEYS/openai", narrow)),
        ("no list perm", post("/api/v1/vault/dev/batch", narrow, json={"pattern": "*"})),
        ("batch out of scope", post("/api/v1/vault/dev/batch", narrow, json={"keys": ["PORT"]})),
        ("batch missing", post("/api/v1/vault/dev/batch", reader, json={"keys": ["NOPE"]})),
        ("missing key", get("/api/v1/vault/dev/NOPE", reader)),
        ("missing env", get("/api/v1/vault/staging/X", root)),
        ("unknown version", get("/api/v1/vault/dev/PORT?version=" + "0" * 40, reader)),
        ("bad name", get("/api/v1/vault/DEV/PORT", reader)),
        ("bad json", post("/api/v1/vault/dev/batch", reader, data=b"{nope")),
        ("too large", post("/api/v1/vault/dev/batch", reader, data=b" " * (1024 * 1024 + 1))),
        ("no token", get("/api/v1/vault/dev/DATABASE_URL")),
        ("bad signature", get("/api/v1/vault/dev/DATABASE_URL", f"{header}.{payload}.AAAA")),
        ("garbage token", get("/api/v1/vault/dev/DATABASE_URL", "x" * 500)),
        ("decrypt failure", get("/api/v1/vault/broken/DATABASE_URL", root)),
        ("decrypt failure batch", post("/api/v1/vault/broken/batch", root, json={"pattern": "*"})),
        ("wrong method", requests.delete(url + "/api/v1/vault/dev/PORT", timeout=60)),
        ("reserved", get("/api/v1/vault/tokens/x", root)),
        ("unknown route", get("/api/v1/nowhere", root)),
        ("sync off", post("/api/v1/sync", data=b"{}")),
        ("mint too wide", post("/api/v1/vault/tokens/generate", narrow, json={"subject": "x"})),
        ("revoke", post("/api/v1/vault/tokens/revoke", root, json={"jti": "never-minted"})),
        ("audit export", get("/api/v1/audit", auditor)),
        ("audit export root", get("/api/v1/audit?outcome=denied", root)),
    ]
    statuses = {}
    for label, r in requests_made:
        statuses[label] = r.status_code
        evidence.answer(label, r)
    assert statuses["usage exhausted"] == 403 and statuses["revoked"] == 403
    assert statuses["decrypt failure"] == 503 and statuses["too large"] == 413
    assert statuses["list"] == 200 and statuses["audit export"] == 200
    assert b"DATABASE_URL" in requests_made[4][1].content  # names do come back

    # -- the dashboard, signed in with a token that may read everything --
    with requests.Session() as browser:
        page = browser.get(url + "/ui/login", timeout=60)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        if page.status_code != 404:  # a build without the dashboard skips this part
            assert page.status_code == 200 and csrf, page.text[:300]
            signed_in = browser.post(
                url + "/ui/login",
                data={"csrf": csrf.group(1), "token": root},
                timeout=60,
                allow_redirects=True,
            )
            evidence.answer("ui login", signed_in)
            for path in ("/ui/", "/ui/env/dev", "/ui/env/dev/keys/DATABASE_URL", "/ui/audit"):
                r = browser.get(url + path, timeout=60)
                assert r.status_code == 200, (path, r.status_code)
                evidence.answer(f"ui {path}", r)

    # -- the CLI, against the same broker --
    cli_env = {
        **os.environ,
        "VANTA_BROKER_URL": url,
        "VANTA_TOKEN": root,
        "SOPS_AGE_KEY_FILE": str(cfg.sops_age_key_file),
    }
    out = tmp_path / "child-saw.txt"
    child = [
        sys.executable,
        "-c",
        "import os, sys; open(sys.argv[1], 'w').write(os.environ.get('DATABASE_URL', '') + "
        "open(os.environ['VANTA_SECRETS_FILE']).read() if 'VANTA_SECRETS_FILE' in os.environ "
        "else os.environ.get('DATABASE_URL', '')); sys.exit(int(sys.argv[2]))",
        str(out),
    ]
    for inject in ("env", "file"):
        for code in ("0", "3"):
            proc = run_cli(
                evidence,
                f"run {inject} exit {code}",
                [
                    "run-with-secrets",
                    "--environment",
                    "dev",
                    "--key-pattern",
                    "*",
                    "--inject-as",
                    inject,
                    "--",
                    *child,
                    code,
                ],
                cli_env,
            )
            assert proc.returncode == int(code), proc.stderr
            assert MARKER in out.read_text()  # the child did get the secrets
            out.unlink()
    proc = run_cli(
        evidence,
        "run with a reader token",
        [
            "run-with-secrets",
            "--environment",
            "dev",
            "--key-pattern",
            "DATABASE_*",
            "--token",
            narrow_lister,
            "--",
            *child,
            "0",
        ],
        cli_env,
    )
    assert proc.returncode == 0 and MARKER in out.read_text()
    for label, args in [
        (
            "run out of scope",
            [
                "run-with-secrets",
                "--environment",
                "prod",
                "--key-pattern",
                "*",
                "--token",
                reader,
                "--",
                *child,
                "0",
            ],
        ),
        (
            "run revoked",
            [
                "run-with-secrets",
                "--environment",
                "dev",
                "--key-pattern",
                "*",
                "--token",
                doomed,
                "--",
                *child,
                "0",
            ],
        ),
        (
            "run broken env",
            [
                "run-with-secrets",
                "--environment",
                "broken",
                "--key-pattern",
                "*",
                "--",
                *child,
                "0",
            ],
        ),
        (
            "run missing command",
            [
                "run-with-secrets",
                "--environment",
                "dev",
                "--key-pattern",
                "*",
                "--",
                str(tmp_path / "no-such-program"),
            ],
        ),
    ]:
        proc = run_cli(evidence, label, args, cli_env)
        assert proc.returncode != 0, label
    proc = run_cli(
        evidence,
        "token generate",
        [
            "token",
            "generate",
            "--subject",
            "cli",
            "--environment",
            "dev",
            "--key-pattern",
            "*",
            "--json",
        ],
        cli_env,
    )
    assert proc.returncode == 0, proc.stderr

    # -- GitOps edits of a secret: the value goes in on stdin only --
    new_value = f"rotated-{MARKER}-v3"
    proc = run_cli(
        evidence,
        "secrets set",
        ["secrets", "set", "dev", "DATABASE_URL", "--repo", str(canary_repo.path)],
        cli_env,
        input=new_value,
    )
    assert proc.returncode == 0, proc.stderr
    for label, args in [
        ("secrets list", ["secrets", "list", "dev", "--repo", str(canary_repo.path)]),
        (
            "secrets history",
            ["secrets", "history", "dev", "DATABASE_URL", "--repo", str(canary_repo.path)],
        ),
        ("secrets check", ["secrets", "check", "--repo", str(canary_repo.path)]),
    ]:
        proc = run_cli(evidence, label, args, cli_env)
        evidence.cli_stdout.append((label, proc.stdout))
    r = get("/api/v1/vault/dev/DATABASE_URL", reader)  # the broker serves the new commit
    assert r.status_code == 200 and new_value in r.text
    git_log = git(canary_repo.path, "log", "--format=%H %an %s%n%b")

    # -- the scan --
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "/api/v1/vault/dev/<path:key>" not in broker.log():
        time.sleep(0.05)  # the request log line is written once the answer left
    audit_files = sorted(cfg.audit_log.parent.glob(cfg.audit_log.name + "*"))
    assert len(audit_files) >= 2  # rotation was exercised
    trail = "".join(p.read_text() for p in audit_files)
    log = broker.log()
    secrets_needles = variants(MARKER)
    credential_needles = [
        SIGNING_KEY,
        *evidence.tokens,
        *(t.split(".")[2] for t in evidence.tokens),
    ]

    places = {
        "audit trail": trail,
        "broker log": log,
        "git history": git_log,
        **{f"answer: {label}": text for label, text in evidence.answers},
        **{f"cli stderr: {label}": text for label, text in evidence.cli_stderr},
        **{f"cli stdout: {label}": text for label, text in evidence.cli_stdout},
    }
    leaks = {where: hits(text, secrets_needles) for where, text in places.items()}
    assert {where: found for where, found in leaks.items() if found} == {}
    for where in ("audit trail", "broker log", "git history"):
        assert hits(places[where], credential_needles) == [], where
    # The scan would have seen a leak: the deliberate reads do hold the marker.
    assert all(MARKER in text for _, text in evidence.secret_answers)
    assert len(evidence.answers) > 40 and len(evidence.cli_stderr) >= 10
    assert "secret.read" in trail and "token_revoked" in trail and "decrypt_failed" in trail
