"""Hostile input (SPEC §4, §6, §10): oversized bodies, wrong JSON, NUL bytes, huge numbers,
deep nesting, giant tokens and headers get 4xx, never a 500; names are checked before any
file or Git object is touched; secrets are never cached; no framework is named."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from dataclasses import replace
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.brokers import start_broker, stop_broker
from support.repos import SIGNING_KEY
from support.tokens import bearer, make_token

from broker.config import Config
from broker.scope import PERMISSIONS
from broker.web.app import create_app

MIB = 1024 * 1024
GENERATE = "/api/v1/vault/tokens/generate"
BATCH = "/api/v1/vault/dev/batch"
POST_ROUTES = [GENERATE, BATCH, "/api/v1/vault/tokens/revoke", "/api/v1/vault/tokens/revoke-self"]
FRAMEWORKS = ("gunicorn", "werkzeug", "flask", "python", "jinja")
LEAKS = ("Traceback", 'File "', ".py", "/work/", "/tmp/")


@pytest.fixture
def config(config: Config) -> Config:
    # Many 401s on purpose here: keep the failed-authentication throttle out of the way.
    return replace(config, auth_failures_per_minute=0)


@pytest.fixture
def root(config: Config) -> str:
    return make_token(config, permissions=PERMISSIONS)


def assert_clean_error(response, status: int | tuple[int, ...], code: str | None = None) -> None:
    """A JSON error of the contract's shape, naming no file, frame or framework."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.get_data()[:300])
    body = response.get_json()
    assert set(body) >= {"error", "request_id"} and set(body["error"]) == {"code", "message"}
    if code is not None:
        assert body["error"]["code"] == code
    text = response.get_data(as_text=True)
    assert not any(leak in text for leak in LEAKS), text


# -- body size -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", POST_ROUTES)
def test_a_body_over_one_mib_is_413_on_every_post_route(client, root, path):
    body = b'{"jti": "' + b"x" * MIB + b'"}'
    r = client.post(path, data=body, headers=bearer(root), content_type="application/json")
    assert_clean_error(r, 413, "payload_too_large")


def test_a_body_of_exactly_one_mib_is_read(client, root):
    body = b'{"keys": ["PORT"]}'
    body += b" " * (MIB - len(body))
    r = client.post(BATCH, data=body, headers=bearer(root), content_type="application/json")
    assert r.status_code == 200 and r.get_json()["values"] == {"PORT": 8080}


def test_an_oversized_body_is_audited_as_413(client, root, config):
    client.post(GENERATE, data=b"{" * (MIB + 1), headers=bearer(root))
    record = json.loads(config.audit_log.read_text().splitlines()[-1])
    assert record["status"] == 413 and record["error"] == "payload_too_large"
    assert record["outcome"] == "error" and record["event"] == "token.generate"


def test_a_body_over_one_mib_is_413_even_where_no_body_is_expected(client, root):
    r = client.get("/api/v1/vault/dev/PORT", data=b"x" * (2 * MIB), headers=bearer(root))
    assert_clean_error(r, 413, "payload_too_large")


# -- wrong JSON ----------------------------------------------------------------------------------


NOT_JSON = [
    b"",
    b"   ",
    b"{",
    b"{'subject': 'x'}",
    b"subject=x&environment=dev",
    b"\x00",
    b'{"subject": "a"}\x00',
    b"\xff\xfe{\x00}\x00",  # UTF-16 with a BOM
    b'{"subject": "\xff"}',  # invalid UTF-8
    b'{"subject": "\\ud800"}',  # a lone surrogate
    b"NaN",
    b'{"ttl_minutes": NaN}',
    b'{"ttl_minutes": Infinity}',
    b'{"ttl_minutes": 1e999}',
    b'{"ttl_minutes": -1e999}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 5000 + b"1" + b"}" * 5000,
    b"null",
    b"[]",
    b'"a string"',
    b"42",
]


@pytest.mark.parametrize("path", POST_ROUTES[:3])
@pytest.mark.parametrize("data", NOT_JSON, ids=range(len(NOT_JSON)))
def test_a_body_that_is_not_a_json_object_is_400(client, root, path, data):
    r = client.post(path, data=data, headers=bearer(root), content_type="application/json")
    assert_clean_error(r, 400, "bad_request")


def deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


GENERATE_FIELDS = {
    "subject": [None, 1, True, [], {}, "", "x" * 129, "a\x00b", "line\nbreak", "\u202e", deep(500)],
    "environment": [None, 1, [], {}, "", "Prod", "../prod", "dev/x", "dev\x00", "tokens", "**"],
    "key_pattern": [None, 1, [], {}, "", "[a-z]*", "a" * 257, "DB_\x00", "a{b,c}", "!x"],
    "ttl_minutes": [None, "15", 15.0, 0.5, True, 0, -1, 1441, 10**30, 2**64, 1e308, [15], {}],
    "usage_limit": ["1", 1.0, 1.5, True, False, 0, -1, 2**53 + 1, 2**63, 10**30, [1], {}],
    "permissions": [None, "secrets:read", [], [1], [None], ["secrets:write"], [["x"]], {}],
}


@pytest.mark.parametrize(
    "field, value",
    [(field, value) for field, values in GENERATE_FIELDS.items() for value in values],
    ids=lambda v: repr(v)[:30],
)
def test_a_wrongly_typed_generate_field_is_400_naming_it(client, root, field, value):
    body = {"subject": "svc", "environment": "dev", "key_pattern": "PORT", field: value}
    r = client.post(GENERATE, json=body, headers=bearer(root))
    assert_clean_error(r, 400, "bad_request")
    assert field in r.get_json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"keys": ["PORT"], "pattern": "*"},
        {"keys": ["PORT"], "extra": 1},
        {"keys": "PORT"},
        {"keys": {"PORT": 1}},
        {"keys": []},
        {"keys": [None]},
        {"keys": [1]},
        {"keys": [["PORT"]]},
        {"keys": ["PORT\x00"]},
        {"keys": ["DB URL"]},
        {"keys": ["/PORT"]},
        {"keys": ["A//B"]},
        {"keys": ["K" * 257]},
        {"keys": ["PORT"] * 1001},
        {"keys": [deep(400)]},
        {"pattern": None},
        {"pattern": 1},
        {"pattern": ["*"]},
        {"pattern": ""},
        {"pattern": "[A-Z]*"},
        {"pattern": "*\x00"},
        {"pattern": "*" * 257},
    ],
    ids=lambda v: repr(v)[:40],
)
def test_a_malformed_batch_is_400(client, root, body):
    r = client.post(BATCH, json=body, headers=bearer(root))
    assert_clean_error(r, 400, "bad_request")


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/vault/dev%00/PORT",
        "/api/v1/vault/dev/PORT%00",
        "/api/v1/vault/DEV/PORT",
        "/api/v1/vault/..%2F..%2Fetc/passwd",
        "/api/v1/vault/dev/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/vault/dev/A//B",
        "/api/v1/vault/dev/%E2%80%AEPORT",
        "/api/v1/vault/dev/%ZZ",
        "/api/v1/vault/" + "a" * 64 + "/PORT",
        "/api/v1/vault/dev/" + "K" * 257,
        "/api/v1/vault/dev?pattern=%00",
        "/api/v1/vault/dev?pattern=[A-Z]*",
        "/api/v1/vault/dev?pattern=" + "*" * 257,
        "/api/v1/vault/dev/PORT?version=%00",
        "/api/v1/vault/dev/PORT?version=HEAD~1",
        "/api/v1/vault/dev/PORT?version=" + "a" * 41,
        "/api/v1/vault/dev/PORT?version=--all",
        "/api/v1/vault/dev/PORT?version=abcdef",
        "/api/v1/vault/dev%2F..%2Fprod/PORT",
    ],
)
def test_hostile_names_in_the_url_are_400_or_404_never_more(client, root, path):
    r = client.get(path, headers=bearer(root))
    assert_clean_error(r, (400, 404))
    assert b"postgres://" not in r.get_data()


# -- names before files --------------------------------------------------------------------------


class TouchRecorder:
    """Stands in front of the real store and notes every call that reaches it."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.touched: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute

        def record(*args: Any, **kwargs: Any) -> Any:
            self.touched.append(name)
            return attribute(*args, **kwargs)

        return record


@pytest.fixture
def recorded(config: Config):
    app = create_app(config)
    recorder = TouchRecorder(app.extensions["vanta"].store)
    app.extensions["vanta"].store = recorder
    return app.test_client(), recorder


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/api/v1/vault/..%2Fprod/PORT", None),
        ("GET", "/api/v1/vault/dev%00/PORT", None),
        ("GET", "/api/v1/vault/dev/PORT%00", None),
        ("GET", "/api/v1/vault/dev?pattern=[x]", None),
        ("GET", "/api/v1/vault/tokens/PORT", None),
        ("GET", "/api/v1/history/DEV/PORT", None),
        ("GET", "/api/v1/history/dev/PORT%00", None),
        ("GET", "/api/v1/history/dev%00/PORT", None),
        ("POST", "/api/v1/vault/DEV/batch", {"keys": ["PORT"]}),
        ("POST", "/api/v1/vault/dev%00/batch", {"keys": ["PORT"]}),
    ],
)
def test_bad_names_are_refused_before_the_store_is_touched(recorded, root, method, path, body):
    client, recorder = recorded
    r = client.open(path, method=method, json=body, headers=bearer(root))
    assert r.status_code in (400, 405)  # 405: `tokens` is reserved (SPEC §4)
    assert recorder.touched == []


@pytest.mark.parametrize("body", [{"keys": ["../x"]}, {"keys": ["A\x00"]}, {"pattern": "[x]"}])
def test_batch_names_are_refused_before_the_store_is_touched(recorded, root, body):
    client, recorder = recorded
    r = client.post(BATCH, json=body, headers=bearer(root))
    assert r.status_code == 400
    assert recorder.touched == []


def test_the_recorder_does_see_a_good_request(recorded, root):
    client, recorder = recorded
    assert client.get("/api/v1/vault/dev/PORT", headers=bearer(root)).status_code == 200
    assert "document" in recorder.touched


# -- tokens and headers ---------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(**overrides: Any) -> str:
    """A token signed with the real key (built by hand, so any claim type fits) whose
    claims an attacker holding the key, or a bug, shaped."""
    now = int(time.time())
    payload = {
        "iss": "vanta-vault",
        "aud": "vanta-vault-api",
        "sub": "svc",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "j" * 32,
        "scope": {"environment": "dev", "key_pattern": "*", "permissions": PERMISSIONS},
        "usage_limit": None,
    }
    for name, value in overrides.items():
        if value is KeyError:
            payload.pop(name)
        else:
            payload[name] = value
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    mac = hmac.new(SIGNING_KEY.encode(), f"{header}.{body}".encode(), hashlib.sha256)
    return f"{header}.{body}.{_b64(mac.digest())}"


HOSTILE_CLAIMS = [
    {"exp": "tomorrow"},
    {"exp": 1e12},
    {"exp": None},
    {"iat": "now"},
    {"iat": None},
    {"nbf": [1]},
    {"sub": 42},
    {"sub": None},
    {"jti": 7},
    {"jti": ""},
    {"jti": "j" * 257},
    {"jti": KeyError},
    {"exp": KeyError},
    {"scope": KeyError},
    {"scope": "dev:*"},
    {"scope": []},
    {"scope": {"environment": "dev", "key_pattern": "*", "permissions": "secrets:read"}},
    {"scope": {"environment": "../prod", "key_pattern": "*", "permissions": []}},
    {"scope": {"environment": "dev", "key_pattern": "[x]", "permissions": []}},
    {"scope": {"environment": "dev", "key_pattern": "*", "permissions": [1, None]}},
    {"scope": {"environment": ["dev"], "key_pattern": "*", "permissions": []}},
    {"usage_limit": 0},
    {"usage_limit": "5"},
    {"usage_limit": 1.5},
    {"usage_limit": True},
    {"iss": ["vanta-vault"]},
    {"iss": None},
    {"aud": {"x": 1}},
    {"aud": ["other"]},
    {"exp": int(time.time()) - 3600},
    {"nbf": int(time.time()) + 3600},
]


@pytest.mark.parametrize("claims", HOSTILE_CLAIMS, ids=lambda v: repr(v)[:40])
def test_signed_tokens_with_hostile_claims_are_a_generic_401(client, claims):
    token = signed(**claims)
    for r in (
        client.get("/api/v1/vault/dev/PORT", headers=bearer(token)),
        client.post("/api/v1/vault/tokens/revoke-self", headers=bearer(token)),
    ):
        assert_clean_error(r, 401, "token_invalid")
        assert r.get_json()["error"]["message"] == "missing or invalid bearer token"


def test_the_hand_signed_token_is_sound_when_its_claims_are(client):
    assert client.get("/api/v1/vault/dev/PORT", headers=bearer(signed())).status_code == 200


@pytest.mark.parametrize(
    "claims",
    [{"exp": 2**64, "usage_limit": 1}, {"exp": 10**30, "usage_limit": 1}, {"usage_limit": 2**64}],
    ids=["exp-2**64", "exp-10**30", "usage-2**64"],
)
def test_claims_too_large_to_store_are_a_401_not_a_500(client, claims):
    r = client.get("/api/v1/vault/dev/PORT", headers=bearer(signed(**claims)))
    assert_clean_error(r, 401, "token_invalid")


def test_a_token_outliving_the_longest_mintable_lifetime_is_refused(client, config):
    too_far = int(time.time()) + config.max_ttl_minutes * 60 + 2 * 3600
    r = client.get("/api/v1/vault/dev/PORT", headers=bearer(signed(exp=too_far)))
    assert_clean_error(r, 401, "token_invalid")


@pytest.mark.parametrize("exp", [2**63, 2**64, 10**30])
def test_revoke_self_with_an_absurd_expiry_is_never_a_500(client, exp):
    token = signed(exp=exp, jti="absurd-" + str(exp))
    r = client.post("/api/v1/vault/tokens/revoke-self", headers=bearer(token))
    assert r.status_code in (200, 401), r.get_data()
    if r.status_code == 200:
        refused = client.get("/api/v1/vault/dev/PORT", headers=bearer(token))
        assert refused.get_json()["error"]["code"] == "token_revoked"


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer a.b.c",
        "Bearer ....",
        "Bearer " + "A" * 20_000,
        "Bearer " + "eyJ" * 3000 + ".e30.x",
        "Bearer eyJhbGciOiJIUzI1NiJ9.\u00e9\u00ff.sig",
        "Bearer \u00e9",
        "bearer   x",
        "Bearer x y z",
    ],
    ids=range(12),
)
def test_malformed_and_giant_authorization_is_401(client, authorization):
    r = client.get("/api/v1/vault/dev/PORT", headers={"Authorization": authorization})
    assert_clean_error(r, 401, "token_invalid")


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.sampled_from(POST_ROUTES[:3]),
    body=st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "subject",
                        "environment",
                        "key_pattern",
                        "ttl_minutes",
                        "usage_limit",
                        "permissions",
                        "keys",
                        "pattern",
                        "jti",
                        "x",
                    ]
                ),
                children,
                max_size=6,
            )
        ),
        max_leaves=20,
    ),
)
def test_any_json_body_gets_a_4xx_or_a_success_never_a_500(client, root, path, body):
    r = client.post(path, data=json.dumps(body), headers=bearer(root))
    assert r.status_code < 500, (path, body, r.get_data()[:300])
    assert r.status_code in (200, 201, 400, 403, 404)


# -- secrets are not cached; answers name no framework ----------------------------------------


def test_every_answer_carrying_a_secret_says_no_store(client, root, secrets_repo):
    version = secrets_repo.commits[-1]
    answers = [
        client.get("/api/v1/vault/dev/PORT", headers=bearer(root)),
        client.get(f"/api/v1/vault/dev/PORT?version={version}", headers=bearer(root)),
        client.get("/api/v1/vault/dev/API_KEYS/openai", headers=bearer(root)),
        client.post(BATCH, json={"keys": ["PORT"]}, headers=bearer(root)),
        client.post(BATCH, json={"pattern": "*"}, headers=bearer(root)),
        client.post(BATCH, json={"pattern": "NOTHING*"}, headers=bearer(root)),
        client.post(
            GENERATE,
            json={"subject": "s", "environment": "dev", "key_pattern": "*"},
            headers=bearer(root),
        ),
    ]
    for r in answers:
        assert r.status_code in (200, 201)
        assert r.headers["Cache-Control"] == "no-store"


def raw_request(url: str, data: bytes) -> bytes:
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def head_and_body(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def names_no_framework(headers: dict[str, str], body: bytes) -> bool:
    text = (" ".join(headers.values()) + body.decode("latin-1")).lower()
    return headers.get("server", "vanta-broker") == "vanta-broker" and not any(
        name in text for name in FRAMEWORKS
    )


@pytest.fixture(params=["granian", "gunicorn"])
def server(request) -> str:
    return request.param


@pytest.fixture
def broker(config: Config, tmp_path, server):
    running = start_broker(
        config,
        tmp_path,
        extra_env={"VANTA_AUTH_FAILURES_PER_MINUTE": "0"},
        extra_args=["--server", server],
    )
    yield running
    stop_broker(running)


def test_the_real_broker_names_no_framework_on_any_answer(broker, config, server):
    root = make_token(config, permissions=PERMISSIONS)
    token = root.encode()
    big = b"x" * (MIB + 10)
    requests_to_send = {
        "ok": b"GET /api/v1/vault/dev/PORT HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + token
        + b"\r\nConnection: close\r\n\r\n",
        "health": b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "401": b"GET /api/v1/vault/dev/PORT HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "404": b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "405": b"DELETE /api/v1/vault/dev/PORT HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "413": b"POST /api/v1/vault/tokens/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + token
        + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(big)
        + big,
        "bad-line": b"GET /api/v1/vault/dev\x00/PORT HTTP/1.1\r\nHost: x\r\n\r\n",
        "bad-version": b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
        "bad-length": b"POST /api/v1/vault/dev/batch HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: -5\r\n\r\n",
        "giant-header": b"GET /api/v1/vault/dev/PORT HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + b"a" * 20_000
        + b"\r\n\r\n",
        "many-headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: 1\r\n" % i for i in range(150))
        + b"\r\n",
        "long-url": b"GET /api/v1/vault/dev/" + b"A" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    }
    statuses = {}
    for name, data in requests_to_send.items():
        status, headers, body = head_and_body(raw_request(broker.url, data))
        statuses[name] = status
        assert names_no_framework(headers, body), (name, headers, body[:200])
        assert status < 500, (name, status)
    assert statuses["ok"] == 200 and statuses["413"] == 413
    # What the server answers itself, before the broker sees the request:
    assert statuses["bad-line"] == 400 and statuses["bad-length"] == 400
    assert statuses["many-headers"] == 431
    if server == "gunicorn":
        assert statuses["giant-header"] == 431 and statuses["long-url"] == 414
    else:  # granian hands these to the broker, which answers them itself
        assert statuses["giant-header"] == 401 and statuses["long-url"] == 401


def test_a_token_just_under_the_header_limit_reaches_the_broker_as_a_json_401(broker):
    r = requests.get(
        f"{broker.url}/api/v1/vault/dev/PORT",
        headers={"Authorization": "Bearer " + "A" * 8000},
        timeout=30,
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_invalid"
    assert r.headers.get("Server", "vanta-broker") == "vanta-broker"


def test_the_real_broker_says_no_store_on_secrets(broker, config):
    root = make_token(config, permissions=PERMISSIONS)
    r = requests.get(f"{broker.url}/api/v1/vault/dev/PORT", headers=bearer(root), timeout=30)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    r = requests.post(
        f"{broker.url}{BATCH}", json={"pattern": "*"}, headers=bearer(root), timeout=30
    )
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"


def chunked(payload: bytes, size: int = 65536) -> bytes:
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def test_a_chunked_body_over_one_mib_is_413(broker, config):
    root = make_token(config, permissions=PERMISSIONS)
    payload = b'{"keys": ["PORT"]}' + b" " * (2 * MIB)
    request = (
        b"POST /api/v1/vault/dev/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + root.encode()
        + b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + chunked(payload)
    )
    status, _, _ = head_and_body(raw_request(broker.url, request))
    assert status == 413


def test_a_hostile_list_pattern_is_answered_promptly(config, secrets_repo, tmp_path):
    long_key = "SERVICE_ACCOUNT_CREDENTIALS_FOR_THE_NIGHTLY_REPORTING_PIPELINE"
    secrets_repo.write_and_commit("ops", {long_key: "v"}, "secrets: add ops")
    running = start_broker(config, tmp_path, workers=1)
    try:
        reader = make_token(config, environment="ops", permissions=("secrets:list",))
        r = requests.get(
            f"{running.url}/api/v1/vault/ops",
            params={"pattern": "*?" * 30 + "Q"},
            headers=bearer(reader),
            timeout=10,
        )
        assert r.status_code == 200 and r.json()["keys"] == []
    except requests.Timeout:
        pytest.fail("no answer within 10 s")
    finally:
        stop_broker(running)


def test_a_malformed_request_is_refused_without_its_text_in_the_log(broker, config, server):
    # The server refuses these itself; gunicorn would quote the offending line in its
    # warning and in its answer's HTML page.
    token = make_token(config).encode()
    answers = [
        raw_request(
            broker.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nBearer " + token + b"\r\n\r\n"
        ),
        raw_request(broker.url, b"GET /api/v1/vault/dev/\x01" + token + b" HTTP/1.1\r\n\r\n"),
    ]
    for answer in answers:
        status, headers, body = head_and_body(answer)
        assert status == 400 and names_no_framework(headers, body)
        assert token not in answer and token[:20] not in answer
    stop_broker(broker)  # the log is complete
    log = broker.log()
    if server == "gunicorn":
        assert log.count("Invalid request from ip=127.0.0.1") == 2
    assert token.decode() not in log and token.decode()[:20] not in log
