"""cli.client: typed results and error mapping against the real broker (a process on
loopback, or the Flask app in-process through a requests adapter), unreachable brokers."""

from __future__ import annotations

import shutil
import socket
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import requests
import responses
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from support.brokers import free_port, read_audit
from support.repos import DEV_SECRETS
from support.tokens import make_token

from broker.web.app import create_app
from cli import client as vc
from cli.client import (
    AuditUnavailable,
    BadRequest,
    BrokerError,
    BrokerUnavailable,
    DecryptFailed,
    Forbidden,
    NotFound,
    PermissionDenied,
    RateLimited,
    ScopeDenied,
    Secret,
    ServiceUnavailable,
    StateUnavailable,
    TokenInvalid,
    TokenRequest,
    TokenRevoked,
    UsageExhausted,
    VaultClient,
    VaultError,
)

READER = ("secrets:read", "secrets:list")


class FlaskAdapter(BaseAdapter):
    """A requests transport that hands each request to a Flask app's test client."""

    def __init__(self, app) -> None:
        super().__init__()
        self.test_client = app.test_client()
        self.sent: list[requests.PreparedRequest] = []
        self.tls: list[tuple[object, object]] = []  # (verify, cert) of each request

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        self.sent.append(request)
        self.tls.append((verify, cert))
        url = urlsplit(request.url)
        answer = self.test_client.open(
            url.path,
            method=request.method,
            query_string=url.query,
            headers=dict(request.headers),
            data=request.body,
        )
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers = CaseInsensitiveDict(answer.headers)
        response._content = answer.get_data()
        response.encoding = "utf-8"
        response.url = request.url
        response.request = request
        return response

    def close(self) -> None:
        pass


def in_process(app, token: str | None, **options) -> tuple[VaultClient, FlaskAdapter]:
    """A client on the in-process app; without a cache unless asked (these tests are about
    what each request answers)."""
    adapter = FlaskAdapter(app)
    session = requests.Session()
    session.mount("http://vault.test", adapter)
    options.setdefault("cache_ttl", 0)
    client = VaultClient("http://vault.test", token, session=session, environ={}, **options)
    return client, adapter


@pytest.fixture
def local(app, config):
    """A client on the in-process app with an all-powerful token."""
    client, _ = in_process(app, make_token(config))
    return client


# -- results, against a real broker process ---------------------------------------------------


def test_get_returns_typed_secret_with_version_and_commit_time(
    running_broker, config, secrets_repo
):
    client = VaultClient(running_broker.url, make_token(config, environment="dev"), environ={})
    secret = client.get("dev", "PORT")
    assert isinstance(secret, Secret)
    assert (secret.environment, secret.key, secret.value) == ("dev", "PORT", 8080)
    assert secret.version == secrets_repo.commits[-1]
    assert isinstance(secret.committed_at, datetime) and secret.committed_at.tzinfo is not None
    assert client.get("dev", "DEBUG").value is True
    assert client.get("dev", "API_KEYS/openai").value == "sk-test-openai"


def test_secret_repr_never_shows_the_value(local):
    secret = local.get("dev", "DATABASE_URL")
    assert DEV_SECRETS["DATABASE_URL"] not in repr(secret)
    batch = local.read_batch("dev", pattern="DATABASE_*")
    assert DEV_SECRETS["DATABASE_URL"] not in repr(batch)


def test_get_at_a_version_reads_the_older_commit(running_broker, config, secrets_repo):
    first = secrets_repo.commits[-1]
    secrets_repo.write_and_commit("dev", {**DEV_SECRETS, "PORT": 9090}, "secrets: dev/PORT")
    client = VaultClient(running_broker.url, make_token(config), environ={})
    assert client.get("dev", "PORT").value == 9090
    old = client.get("dev", "PORT", version=first)
    assert old.value == 8080 and old.version == first
    assert client.get("dev", "PORT", version=first[:7]).version == first


def test_batch_by_pattern_and_by_keys_is_one_counted_use(running_broker, config):
    token = make_token(config, environment="dev", permissions=READER, usage_limit=1)
    client = VaultClient(running_broker.url, token, environ={})
    batch = client.read_batch("dev", pattern="API_KEYS/*")
    assert dict(batch.values) == {
        "API_KEYS/openai": "sk-test-openai",
        "API_KEYS/stripe": "sk_test_stripe",
    }
    assert batch.environment == "dev" and len(batch.version or "") == 40
    with pytest.raises(UsageExhausted):
        client.get_many("dev", keys=["PORT"])
    other = VaultClient(running_broker.url, make_token(config, environment="dev"), environ={})
    assert other.get_many("dev", keys=["PORT", "DEBUG"]) == {"PORT": 8080, "DEBUG": True}


def test_batch_needs_exactly_one_of_keys_and_pattern(local):
    with pytest.raises(ValueError):
        local.read_batch("dev")
    with pytest.raises(ValueError):
        local.read_batch("dev", keys=["PORT"], pattern="*")


def test_list_gives_names_inside_the_token_pattern(running_broker, config, secrets_repo):
    client = VaultClient(
        running_broker.url,
        make_token(config, environment="dev", key_pattern="DATABASE_*", permissions=READER),
        environ={},
    )
    listed = client.list_keys("dev")
    assert set(listed.keys) == {"DATABASE_URL", "DATABASE_USER"}
    assert listed.version == secrets_repo.commits[-1]
    assert client.list("dev", pattern="*_URL") == ["DATABASE_URL"]


def test_history_gives_typed_versions_newest_first(running_broker, config, secrets_repo):
    secrets_repo.write_and_commit("dev", {**DEV_SECRETS, "PORT": 1}, "secrets: change dev/PORT")
    client = VaultClient(running_broker.url, make_token(config), environ={})
    versions = client.history("dev", "PORT")
    assert [v.change for v in versions] == ["changed", "added"]
    assert versions[0].version == secrets_repo.commits[-1]
    assert versions[0].author == "Ada Tester"
    assert versions[0].message.startswith("secrets: change dev/PORT")
    assert versions[0].committed_at is not None and versions[0].committed_at.tzinfo == UTC


def test_generate_token_returns_the_scope_and_a_working_token(running_broker, config):
    issuer = make_token(config, environment="dev", permissions=(*READER, "tokens:issue"))
    client = VaultClient(running_broker.url, issuer, environ={})
    minted = client.generate_token(
        TokenRequest("svc", "dev", "DATABASE_*", ttl_minutes=5, usage_limit=2, permissions=READER)
    )
    assert minted.token_type == "Bearer" and 290 <= minted.expires_in <= 300
    scope = minted.scope
    assert (scope.subject, scope.environment, scope.key_pattern) == ("svc", "dev", "DATABASE_*")
    assert scope.permissions == READER and scope.usage_limit == 2
    assert minted.access_token not in repr(minted)
    reader = VaultClient(running_broker.url, minted.access_token, environ={})
    assert reader.get("dev", "DATABASE_USER").value == "app"


# -- settings: arguments first, then the environment ------------------------------------------


def test_url_and_token_come_from_the_environment_only_when_not_given(running_broker, config):
    token = make_token(config, environment="dev")
    environ = {"VANTA_BROKER_URL": running_broker.url, "VANTA_TOKEN": token}
    assert VaultClient(environ=environ).get("dev", "PORT").value == 8080
    with pytest.raises(TokenInvalid):
        VaultClient(token="not-a-token", environ=environ).get("dev", "PORT")
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BrokerUnavailable):
        VaultClient(dead, environ=environ).get("dev", "PORT")


def test_defaults_without_environment():
    client = VaultClient(environ={})
    assert client.url == vc.DEFAULT_BROKER_URL and not client.has_token
    assert client.timeout == 5.0


def test_the_session_passed_in_carries_every_request(app, config):
    client, adapter = in_process(app, make_token(config))
    client.get("dev", "PORT")
    client.list("dev")
    assert [r.method for r in adapter.sent] == ["GET", "GET"]
    assert adapter.sent[0].headers["Authorization"].startswith("Bearer ")


def test_tls_settings_come_from_arguments_or_the_environment(app, config, monkeypatch):
    adapter = FlaskAdapter(app)
    session = requests.Session()
    session.mount("http://vault.test", adapter)
    monkeypatch.setenv("VANTA_CA_BUNDLE", "/etc/vanta/ca.pem")
    monkeypatch.setenv("VANTA_CLIENT_CERT", "/etc/vanta/me.crt")
    monkeypatch.setenv("VANTA_CLIENT_KEY", "/etc/vanta/me.key")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/other/ca.pem")
    token = make_token(config)
    VaultClient("http://vault.test", token, session=session).get("dev", "PORT")
    VaultClient("http://vault.test", token, session=session, ca_bundle="/ca", client_cert="/c").get(
        "dev", "PORT"
    )
    VaultClient("http://vault.test", token, session=session, environ={}).get("dev", "PORT")
    assert adapter.tls == [
        ("/etc/vanta/ca.pem", ("/etc/vanta/me.crt", "/etc/vanta/me.key")),  # VANTA_ wins
        ("/ca", "/c"),
        ("/etc/other/ca.pem", None),  # without VANTA_CA_BUNDLE, requests' own variables
    ]


@pytest.mark.parametrize(
    ("options", "environ", "expected"),
    [
        ({"client_cert": ("/c.pem", "/k.pem")}, {}, ("/c.pem", "/k.pem")),
        ({"client_cert": "/c.pem", "client_key": "/k.pem"}, {}, ("/c.pem", "/k.pem")),
        ({}, {"VANTA_CLIENT_CERT": "/both.pem"}, "/both.pem"),
        ({"client_key": "/k.pem"}, {"VANTA_CLIENT_CERT": "/c.pem"}, ("/c.pem", "/k.pem")),
    ],
)
def test_the_forms_of_a_client_certificate(app, config, options, environ, expected):
    adapter = FlaskAdapter(app)
    session = requests.Session()
    session.mount("http://vault.test", adapter)
    client = VaultClient(
        "http://vault.test", make_token(config), session=session, environ=environ, **options
    )
    client.get("dev", "PORT")
    assert [cert for _, cert in adapter.tls] == [expected]


def test_a_key_beside_a_tuple_is_refused():
    with pytest.raises(VaultError, match="beside a"):
        VaultClient("http://x", "t", client_cert=("/c", "/k"), client_key="/k2", environ={})


@pytest.mark.parametrize(
    "knob",
    [
        {"cache_ttl": -1},
        {"max_stale": -1},
        {"retries": -1},
        {"backoff": -0.1},
        {"breaker_threshold": -1},
        {"breaker_cooldown": -1},
    ],
)
def test_negative_knobs_are_refused(knob):
    with pytest.raises(ValueError):
        VaultClient("http://x", "t", environ={}, **knob)


def test_the_cli_goes_through_the_same_client(running_broker, config):
    # A 503 (the broker said it did nothing) then a real answer: the CLI's request took
    # the SDK's retry path. A POST is retried only when it cannot have been processed.
    from click.testing import CliRunner

    from cli.commands.token import token as token_group

    issuer = make_token(config, environment="dev", permissions=(*READER, "tokens:issue"))
    url = running_broker.url + "/api/v1/vault/tokens/generate"
    with responses.RequestsMock() as scripted:
        scripted.add(responses.POST, url, status=503)
        scripted.add(responses.PassthroughResponse(responses.POST, url))
        result = CliRunner().invoke(
            token_group,
            ["generate", "--subject", "s", "--environment", "dev", "--key-pattern", "*", "--json"],
            env={"VANTA_BROKER_URL": running_broker.url, "VANTA_TOKEN": issuer},
        )
        assert result.exit_code == 0, result.stderr
        assert len(scripted.calls) == 2
    assert [r["status"] for r in read_audit(config)] == [201]


@pytest.mark.parametrize(("environment", "key"), [("dev", "../PORT"), ("..", "PORT")])
def test_dot_segments_are_refused_before_any_request(app, config, environment, key):
    # requests and urllib3 would resolve '..' and ask for another URL altogether
    client, adapter = in_process(app, make_token(config))
    with pytest.raises(BadRequest) as caught:
        client.get(environment, key)
    assert caught.value.message == "a name cannot be '..'" and adapter.sent == []


def test_other_characters_are_percent_encoded(app, config):
    client, adapter = in_process(app, make_token(config))
    with pytest.raises(BadRequest):
        client.get("dev", "A B?#")
    assert adapter.sent[0].path_url == "/api/v1/vault/dev/A%20B%3F%23"


# -- error mapping ----------------------------------------------------------------------------


def test_broker_error_carries_status_code_message_and_request_id(running_broker, config):
    token = make_token(config, environment="dev", key_pattern="DATABASE_*")
    client = VaultClient(running_broker.url, token, environ={})
    with pytest.raises(ScopeDenied) as caught:
        client.get("dev", "PORT")
    error = caught.value
    assert (error.status, error.code) == (403, "scope_denied")
    assert error.message == "the key is outside the token's pattern"
    assert str(error).startswith("403 scope_denied: the key is outside the token's pattern")
    assert token not in str(error)
    records = [r for r in read_audit(config) if r["status"] == 403]
    assert records[-1]["request_id"] == error.request_id


@pytest.mark.parametrize(
    ("call", "token_args", "expected", "code"),
    [
        (lambda c: c.get("prod", "API_KEY"), {"environment": "dev"}, ScopeDenied, "scope_denied"),
        (
            lambda c: c.list("dev"),
            {"permissions": ("secrets:read",)},
            PermissionDenied,
            "permission_denied",
        ),
        (lambda c: c.get("dev", "MISSING"), {}, NotFound, "not_found"),
        (lambda c: c.get("Bad_Env", "PORT"), {}, BadRequest, "bad_request"),
        (lambda c: c.get("dev", "PORT", version="zz"), {}, BadRequest, "bad_request"),
        (lambda c: c.list("tokens"), {}, BadRequest, "method_not_allowed"),
        (
            lambda c: c.generate_token(TokenRequest("s", "dev", "*")),
            {"permissions": READER},
            PermissionDenied,
            "permission_denied",
        ),
        (
            lambda c: c.generate_token(TokenRequest("s", "prod", "*")),
            {"environment": "dev"},
            ScopeDenied,
            "scope_denied",
        ),
    ],
)
def test_each_error_code_raises_its_class(app, config, call, token_args, expected, code):
    client, _ = in_process(app, make_token(config, **token_args))
    with pytest.raises(expected) as caught:
        call(client)
    assert caught.value.code == code and isinstance(caught.value, BrokerError)
    assert caught.value.request_id


def test_missing_or_bad_token_is_token_invalid(app):
    for token in (None, "garbage"):
        client, _ = in_process(app, token)
        with pytest.raises(TokenInvalid) as caught:
            client.get("dev", "PORT")
        assert caught.value.status == 401


def test_usage_exhausted_and_revoked_are_forbidden(app, config):
    client, _ = in_process(app, make_token(config, usage_limit=1))
    client.get("dev", "PORT")
    with pytest.raises(UsageExhausted) as caught:
        client.get("dev", "PORT")
    assert isinstance(caught.value, Forbidden) and caught.value.status == 403
    token = make_token(config)
    client, _ = in_process(app, token)
    client.session.post(
        "http://vault.test/api/v1/vault/tokens/revoke-self",
        headers={"Authorization": f"Bearer {token}"},
    ).raise_for_status()
    with pytest.raises(TokenRevoked):
        client.get("dev", "PORT")


def test_rate_limited_carries_retry_after(config):
    app = create_app(replace(config, rate_limit="1/minute"))
    client, _ = in_process(app, make_token(config))
    client.get("dev", "PORT")
    with pytest.raises(RateLimited) as caught:
        client.get("dev", "PORT")
    assert caught.value.status == 429 and 1 <= (caught.value.retry_after or 0) <= 60


def test_decrypt_failure_is_service_unavailable(app, config, secrets_repo):
    (secrets_repo.secrets_dir / "broken.enc.yaml").write_text("A: plain\nsops: {}\n")
    secrets_repo.commit("secrets: a broken file")
    client, _ = in_process(app, make_token(config))
    with pytest.raises(DecryptFailed) as caught:
        client.get("broken", "A")
    assert isinstance(caught.value, ServiceUnavailable) and caught.value.status == 503


def test_audit_failure_is_audit_unavailable(app, config):
    client, _ = in_process(app, make_token(config))
    client.get("dev", "PORT")
    shutil.rmtree(config.audit_log.parent)
    config.audit_log.parent.write_text("")  # the audit directory is now a file
    with pytest.raises(AuditUnavailable) as caught:
        client.get("dev", "PORT")
    assert caught.value.code == "audit_unavailable" and caught.value.status == 503


def test_state_store_down_is_state_unavailable(config):
    from broker.config import SecretValue

    dead = SecretValue(f"redis://127.0.0.1:{free_port()}/0")
    app = create_app(replace(config, state_url=dead))
    client, _ = in_process(app, make_token(config))
    with pytest.raises(StateUnavailable):
        client.get("dev", "PORT")


def test_unknown_code_is_mapped_by_status():
    response = requests.Response()
    response.status_code = 403
    response._content = b'{"error": {"code": "brand_new", "message": "m"}, "request_id": "r1"}'
    error = vc.error_from_response(response)
    assert type(error) is Forbidden and (error.code, error.request_id) == ("brand_new", "r1")
    response.status_code, response._content = 502, b"<html>bad gateway</html>"
    error = vc.error_from_response(response)
    assert type(error) is BrokerError and error.code == "http_502"


def test_the_tree_of_spec_12():
    assert issubclass(BrokerUnavailable, VaultError) and issubclass(BrokerError, VaultError)
    for cls in (BadRequest, TokenInvalid, Forbidden, NotFound, RateLimited, ServiceUnavailable):
        assert issubclass(cls, BrokerError)
    for cls in (ScopeDenied, PermissionDenied, UsageExhausted, TokenRevoked):
        assert issubclass(cls, Forbidden)
    for cls in (DecryptFailed, AuditUnavailable, StateUnavailable):
        assert issubclass(cls, ServiceUnavailable)
    assert "VaultError" in vc.__doc__ and "StateUnavailable" in vc.__doc__


# -- unreachable brokers -----------------------------------------------------------------------


def test_refused_connection_is_broker_unavailable_in_one_line():
    url = f"http://127.0.0.1:{free_port()}"
    client = VaultClient(url, "secret-token-value", environ={})
    with pytest.raises(BrokerUnavailable) as caught:
        client.get("dev", "PORT")
    message = str(caught.value)
    assert message == f"cannot reach the broker at {url}: connection refused"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_silent_broker_times_out_as_broker_unavailable():
    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        client = VaultClient(f"http://127.0.0.1:{port}", "t", timeout=0.3, retries=0, environ={})
        with pytest.raises(BrokerUnavailable, match="did not answer within 0.3s"):
            client.get("dev", "PORT")


def test_credentials_in_the_url_never_reach_an_error():
    url = f"http://user:hunter2@127.0.0.1:{free_port()}"
    with pytest.raises(BrokerUnavailable) as caught:
        VaultClient(url, "t", environ={}).get("dev", "PORT")
    assert "hunter2" not in str(caught.value) and "127.0.0.1" in str(caught.value)
    assert "hunter2" not in repr(VaultClient(url, "t", environ={}))


def test_a_token_with_a_line_break_is_refused_without_quoting_it():
    with pytest.raises(VaultError) as caught:
        VaultClient(f"http://127.0.0.1:{free_port()}", "abc\ndef", environ={}).get("dev", "X")
    assert "abc" not in str(caught.value)


def test_a_non_broker_answer_is_a_broker_error(tmp_path):
    import http.server
    import threading

    class Plain(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Plain)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = VaultClient(f"http://127.0.0.1:{server.server_port}", "t", environ={})
        with pytest.raises(BrokerError) as caught:
            client.get("dev", "PORT")
        assert caught.value.code == "invalid_response"
    finally:
        server.shutdown()
        server.server_close()
