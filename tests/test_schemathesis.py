"""Schemathesis against a real `vanta-broker serve`: every answer conforms to the broker's
OpenAPI document (status documented, body and headers as documented, never a 5xx).

The cases come from `broker.web.openapi.build_document`, the very document each broker here
serves at GET /api/v1/openapi.json (checked first). Three passes, each on its own broker
process, each bounded and derandomized so that CI sends the same requests every time:

- with an admin token (environment "*", pattern "*", all four permissions), a fresh one
  minted offline for every case, so revoke-self (or a revoke that names it) never takes
  away the token the next case uses;
- without a token (what schemathesis makes of the bearer scheme on its own), each
  operation from its own client address under a low failed-authentication throttle, so
  401s and then 429s with Retry-After meet the document;
- the webhook of a broker following a Git remote: a well-formed signature is replaced by
  the true HMAC of the body sent (200 after a real fetch), a malformed or missing one is
  left as generated (401 signature_invalid).

The brokers live for the module and the tests are built at import (`schema.parametrize`):
schemathesis's lazy `pytest.from_fixture` does not run on pytest 9.2 (it sets the removed
`Node._nodeid`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import missing_required_header
from support.agekeys import AgeKey
from support.brokers import RunningBroker, start_broker, stop_broker
from support.repos import (
    DEV_SECRETS,
    PROD_SECRETS,
    SIGNING_KEY,
    SOPS_BIN,
    SecretsRepo,
    make_secrets_repo,
)
from support.tokens import bearer, make_token, minute_with_room

from broker.config import Config, Keyring, SecretValue
from broker.web.openapi import build_document

MAX_TTL_MINUTES = 1440
WEBHOOK_SECRET = "schemathesis-webhook-secret"
SIGNATURE_HEADER = "X-Hub-Signature-256"
WELL_FORMED_SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")
SYNC = "/api/v1/sync"

# What "conforms" means here; the remaining built-in checks (stateful resource checks,
# positive data acceptance, object-level authorization) assume a CRUD API this is not.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "ignored_auth",
)
OTHER_CHECKS = (
    "positive_data_acceptance",
    "use_after_free",
    "ensure_resource_availability",
    "object_level_authorization",
    "allow_header_conformance",
)


def load_schema(max_examples: int) -> Any:
    """The document, with bounded and reproducible generation (seed, derandomized, no
    example database, no deadline: schemathesis sets none)."""
    checks: dict[str, Any] = {name: {"enabled": False} for name in OTHER_CHECKS}
    checks.update({name: {"enabled": True} for name in CHECKS})
    config = SchemathesisConfig.from_dict(
        {
            "seed": 20260101,
            "generation": {
                "mode": "all",
                "max-examples": max_examples,
                "deterministic": True,
                "database": "none",
            },
            "phases": {"stateful": {"enabled": False}},
            "checks": checks,
            "suppress-health-check": ["all"],
        }
    )
    return schemathesis.openapi.from_dict(build_document(MAX_TTL_MINUTES), config=config)


@schemathesis.deserializer("application/x-ndjson")
def _json_lines(ctx: Any, response: Any) -> list[Any]:
    """An audit export read as the array of its lines, as the document describes it."""
    return [json.loads(line) for line in response.content.splitlines() if line.strip()]


# -- one repository and three brokers for the module -------------------------------------


@dataclass(frozen=True)
class Bench:
    """What the module's brokers share: a config, its secrets repository, a directory."""

    config: Config
    repo: SecretsRepo
    root: Path

    def start(self, name: str, extra_env: dict[str, str]) -> RunningBroker:
        """A broker with its own audit trail and state under root/name."""
        workdir = self.root / name
        workdir.mkdir()
        env = {
            "VANTA_AUDIT_LOG": str(workdir / "audit.jsonl"),
            "VANTA_STATE_DB": str(workdir / "broker.db"),
            **extra_env,
        }
        return start_broker(self.config, workdir, extra_env=env)

    def audit_trail(self, name: str) -> list[dict[str, Any]]:
        lines = (self.root / name / "audit.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory, age_key: AgeKey, age_key_file: Path) -> Bench:
    root = tmp_path_factory.mktemp("schemathesis")
    repo = make_secrets_repo(root / "repo", age_key.recipient)
    repo.write("dev", DEV_SECRETS)
    repo.write("prod", PROD_SECRETS)
    repo.commit("secrets: add dev and prod")
    config = Config(
        keyring=Keyring(((None, SecretValue(SIGNING_KEY)),)),
        sops_files_path=repo.secrets_dir,
        audit_log=root / "audit" / "access.jsonl",
        state_db=root / "state" / "broker.db",
        sops_bin=SOPS_BIN,
        sops_age_key_file=age_key_file,
        max_ttl_minutes=MAX_TTL_MINUTES,
    )
    return Bench(config, repo, root)


@pytest.fixture(scope="module")
def admin_broker(bench: Bench) -> Iterator[RunningBroker]:
    # ignored_auth sends token-less probes: the failed-auth throttle would 429 the rest.
    broker = bench.start("admin", {"VANTA_AUTH_FAILURES_PER_MINUTE": "0"})
    yield broker
    stop_broker(broker)


@pytest.fixture(scope="module")
def anonymous_broker(bench: Bench) -> Iterator[RunningBroker]:
    # Each operation comes from its own address (one trusted proxy): it meets its first
    # 401s, then the throttle's 429s, whichever UTC minute the pass starts in.
    env = {"VANTA_AUTH_FAILURES_PER_MINUTE": "10", "VANTA_TRUSTED_PROXIES": "1"}
    broker = bench.start("anonymous", env)
    yield broker
    stop_broker(broker)


@pytest.fixture(scope="module")
def remote_broker(bench: Bench) -> Iterator[RunningBroker]:
    env = {
        "VANTA_GIT_REMOTE": str(bench.repo.path),
        "VANTA_GIT_CACHE": str(bench.root / "git-cache"),
        "VANTA_GIT_POLL_SECONDS": "0",
        "VANTA_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "VANTA_SOPS_FILES_PATH": "secrets",
        "VANTA_AUTH_FAILURES_PER_MINUTE": "0",
    }
    broker = bench.start("remote", env)
    yield broker
    stop_broker(broker)


def test_each_broker_serves_the_document_the_cases_come_from(
    admin_broker: RunningBroker, anonymous_broker: RunningBroker, remote_broker: RunningBroker
) -> None:
    expected = build_document(MAX_TTL_MINUTES)
    for broker in (admin_broker, anonymous_broker, remote_broker):
        r = requests.get(f"{broker.url}/api/v1/openapi.json", timeout=10)
        assert r.status_code == 200, r.text
        assert r.json() == expected


# -- the passes ---------------------------------------------------------------------------

admin = load_schema(max_examples=60).exclude(path=SYNC)
anonymous = load_schema(max_examples=15).exclude(path=SYNC)
webhook = load_schema(max_examples=30).include(path=SYNC)
ANONYMOUS_LABELS = sorted(result.ok().label for result in anonymous.get_all_operations())


@admin.parametrize()
def test_every_answer_to_an_admin_token_conforms(
    case: Any, admin_broker: RunningBroker, bench: Bench
) -> None:
    token = make_token(bench.config, subject="schemathesis")
    case.call_and_validate(base_url=admin_broker.url, headers=bearer(token))


@pytest.fixture
def minute_for_the_operation() -> None:
    """An operation's 401s and then 429s must fall in one UTC minute of the throttle (once
    per operation: the test body runs once per case)."""
    minute_with_room(10)


@anonymous.parametrize()
def test_every_answer_without_a_token_conforms(
    case: Any, anonymous_broker: RunningBroker, minute_for_the_operation: None
) -> None:
    # Once throttled, a request without Authorization is rightly 429, not the 401 that
    # missing_required_header wants: the admin pass (throttle off) runs that check.
    client = f"10.0.0.{ANONYMOUS_LABELS.index(case.operation.label) + 1}"
    case.call_and_validate(
        base_url=anonymous_broker.url,
        headers={"X-Forwarded-For": client},
        excluded_checks=[missing_required_header],
    )


class SigningSession(requests.Session):
    """Puts the true HMAC of the body sent in place of a well-formed signature."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        given = request.headers.get(SIGNATURE_HEADER, "")
        if WELL_FORMED_SIGNATURE.fullmatch(given):
            body = request.body or b""
            body = body.encode() if isinstance(body, str) else body
            digest = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
            request.headers[SIGNATURE_HEADER] = f"sha256={digest}"
        return super().send(request, **kwargs)


@webhook.parametrize()
def test_every_webhook_answer_conforms(case: Any, remote_broker: RunningBroker) -> None:
    with SigningSession() as session:
        case.call_and_validate(base_url=remote_broker.url, session=session)


# -- the passes reached what they are for ---------------------------------------------------


def test_the_admin_pass_reached_every_endpoints_success(
    admin_broker: RunningBroker, bench: Bench
) -> None:
    """The admin pass starts from the document's own examples (its explicit phase); those
    cases alone reach every endpoint's success, so each 2xx answer is held to the document
    whatever the fuzzing draws. The cases are sent here (it needs no other test's trail)."""
    reached: dict[str, set[int]] = {}

    def sender(statuses: set[int]) -> Any:
        def send(case: Any) -> None:
            token = make_token(bench.config, subject="schemathesis-examples")
            response = case.call_and_validate(base_url=admin_broker.url, headers=bearer(token))
            statuses.add(response.status_code)

        return send

    for result in admin.get_all_operations():
        operation = result.ok()
        send = sender(reached.setdefault(operation.label, set()))
        for strategy in operation.get_strategies_from_examples() or [operation.as_strategy()]:
            bounded = settings(
                max_examples=3,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            bounded(given(strategy)(send))()
    succeeded = {label for label, statuses in reached.items() if any(s < 300 for s in statuses)}
    assert set(reached) - succeeded == set(), reached


def test_the_anonymous_pass_met_both_401_and_the_throttles_429(
    anonymous_broker: RunningBroker, bench: Bench
) -> None:
    trail = bench.audit_trail("anonymous")
    for client in {r["client_ip"] for r in trail}:
        assert {401, 429} <= {r["status"] for r in trail if r["client_ip"] == client}, client


def test_the_webhook_pass_synced_and_refused_bad_signatures(
    remote_broker: RunningBroker, bench: Bench
) -> None:
    syncs = [r for r in bench.audit_trail("remote") if r["event"] == "git.sync"]
    assert {r["status"] for r in syncs} >= {200, 401}
