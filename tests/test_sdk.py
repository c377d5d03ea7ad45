"""The Python SDK (SPEC §12) against a real broker process: the cache, stale answers when
the broker is gone, retries, the circuit breaker, AWS Secrets Manager's shape, threads.

`responses` only scripts odd answers (resets, 502s) in front of the real broker."""

from __future__ import annotations

import http.client
import json
import logging
import shutil
import socket
import threading
import time
from datetime import datetime

import pytest
import requests
import responses
import urllib3
from support.brokers import read_audit, start_broker, stop_broker
from support.clock import ManualClock
from support.repos import DEV_SECRETS, git
from support.tokens import bearer, make_token

from cli.client import (
    BadRequest,
    BrokerError,
    BrokerUnavailable,
    DecryptFailed,
    NotFound,
    RateLimited,
    ScopeDenied,
    TokenInvalid,
    TokenRequest,
    TokenRevoked,
    UsageExhausted,
    VaultClient,
    VaultError,
)
from cli.client._retry import RetryPolicy, send_with_retries

PORT_PATH = "/api/v1/vault/dev/PORT"


def reads_of(config, key: str) -> list[dict]:
    """The broker's audit records of reads of dev/`key` (a request, whatever its answer)."""
    return [
        r
        for r in read_audit(config)
        if r["event"] == "secret.read" and r.get("key") == key and r["environment"] == "dev"
    ]


def sdk(url: str, token: str, **options) -> VaultClient:
    options.setdefault("backoff", 0.01)
    return VaultClient(url, token, environ={}, **options)


# -- the cache ---------------------------------------------------------------------------------


def test_a_one_use_token_reads_twice_within_the_ttl_with_one_request(running_broker, config):
    token = make_token(config, environment="dev", usage_limit=1)
    client = sdk(running_broker.url, token, cache_ttl=30)
    first = client.get("dev", "DATABASE_URL")
    second = client.get("dev", "DATABASE_URL")
    assert first.value == second.value == DEV_SECRETS["DATABASE_URL"]
    shaped = client.get_secret_value(SecretId="dev/DATABASE_URL")
    assert shaped["SecretString"] == DEV_SECRETS["DATABASE_URL"]
    assert len(reads_of(config, "DATABASE_URL")) == 1
    with pytest.raises(UsageExhausted):  # the one use is spent: a miss would fail
        client.get("dev", "PORT")


def test_after_the_ttl_the_broker_is_asked_again(running_broker, config):
    token = make_token(config, environment="dev", usage_limit=1)
    clock = ManualClock()
    client = sdk(running_broker.url, token, cache_ttl=30, clock=clock)
    assert client.get("dev", "PORT").value == 8080
    clock.advance(29.9)
    assert client.get("dev", "PORT").value == 8080  # still cached: no use spent
    clock.advance(0.1)
    with pytest.raises(UsageExhausted):
        client.get("dev", "PORT")
    assert len(reads_of(config, "PORT")) == 2


def test_cache_ttl_zero_asks_every_time(running_broker, config):
    client = sdk(running_broker.url, make_token(config, environment="dev"), cache_ttl=0)
    client.get("dev", "PORT")
    client.get("dev", "PORT")
    assert len(reads_of(config, "PORT")) == 2


def test_batches_lists_and_versions_are_cached_by_what_was_asked(
    running_broker, config, secrets_repo
):
    first = secrets_repo.commits[-1]
    secrets_repo.write_and_commit("dev", {**DEV_SECRETS, "PORT": 9090}, "secrets: dev/PORT")
    token = make_token(config, environment="dev")
    client = sdk(running_broker.url, token, cache_ttl=30)
    for _ in range(2):
        assert client.get("dev", "PORT").value == 9090
        assert client.get("dev", "PORT", version=first).value == 8080
        assert client.get_many("dev", keys=["PORT", "DEBUG"]) == {"PORT": 9090, "DEBUG": True}
        assert client.get_many("dev", keys=["DEBUG"]) == {"DEBUG": True}
        assert client.list("dev", pattern="DATABASE_*") == ["DATABASE_URL", "DATABASE_USER"]
    events = [r["event"] for r in read_audit(config)]
    assert events.count("secret.read") == 2  # PORT now, PORT at `first`
    assert events.count("secret.batch") == 2  # two different key sets
    assert events.count("secret.list") == 1


def test_a_401_or_403_empties_the_cache_and_is_never_retried(running_broker, config):
    token = make_token(config, environment="dev")
    client = sdk(running_broker.url, token, cache_ttl=30, retries=3)
    assert client.get("dev", "PORT").value == 8080
    revoked = requests.post(
        f"{running_broker.url}/api/v1/vault/tokens/revoke-self", headers=bearer(token), timeout=10
    )
    assert revoked.status_code == 200
    with pytest.raises(TokenRevoked):
        client.get("dev", "DEBUG")
    assert statuses(config, "secret.read") == [200, 403]  # one request, no retry
    with pytest.raises(TokenRevoked):  # no longer served from memory
        client.get("dev", "PORT")
    assert statuses(config, "secret.read") == [200, 403, 403]


def statuses(config, event: str) -> list[int]:
    return [r["status"] for r in read_audit(config) if r["event"] == event]


@pytest.mark.parametrize(
    ("token_args", "key", "expected", "status"),
    [
        ({"environment": "dev", "key_pattern": "DATABASE_*"}, "PORT", ScopeDenied, 403),
        ({"environment": "dev", "usage_limit": 1}, "MISSING", NotFound, 404),
    ],
)
def test_other_errors_are_not_retried(running_broker, config, token_args, key, expected, status):
    client = sdk(running_broker.url, make_token(config, **token_args), retries=3)
    with pytest.raises(expected):
        client.get("dev", key)
    assert [r["status"] for r in reads_of(config, key)] == [status]


def test_a_bad_token_is_one_request(running_broker, config):
    client = sdk(running_broker.url, "not-a-token", retries=3)
    with pytest.raises(TokenInvalid):
        client.get("dev", "PORT")
    assert [r["status"] for r in read_audit(config)] == [401]


# -- stale answers -------------------------------------------------------------------------------


def test_with_the_broker_killed_the_cache_serves_until_max_stale_then_the_error(
    config, tmp_path, caplog
):
    clock = ManualClock()
    broker = start_broker(config, tmp_path, workers=1)
    try:
        client = sdk(
            broker.url,
            make_token(config),
            cache_ttl=30,
            max_stale=300,
            retries=1,
            breaker_threshold=0,
            clock=clock,
        )
        assert client.get("dev", "DATABASE_URL").value == DEV_SECRETS["DATABASE_URL"]
    finally:
        stop_broker(broker)
    caplog.set_level(logging.WARNING, logger="cli.client")
    for age in (30, 120, 299.9):  # past the TTL: the broker is asked, fails, stale is served
        clock.now = 1000.0 + age
        assert client.get("dev", "DATABASE_URL").value == DEV_SECRETS["DATABASE_URL"]
    clock.now = 1000.0 + 300.1
    with pytest.raises(BrokerUnavailable) as caught:
        client.get("dev", "DATABASE_URL")
    assert "cannot reach the broker" in str(caught.value)
    stale = [r for r in caplog.records if "serving a cached answer" in r.getMessage()]
    assert len(stale) == 3
    assert stale and "GET /api/v1/vault/dev/DATABASE_URL" in stale[0].getMessage()
    assert all(DEV_SECRETS["DATABASE_URL"] not in r.getMessage() for r in caplog.records)


def test_a_503_answer_serves_the_stale_value_but_a_404_does_not(
    running_broker, config, secrets_repo, caplog
):
    clock = ManualClock()
    client = sdk(
        running_broker.url, make_token(config), cache_ttl=30, max_stale=60, retries=0, clock=clock
    )
    assert client.get("dev", "PORT").value == 8080
    (secrets_repo.secrets_dir / "dev.enc.yaml").write_text("PORT: 1\nsops: {}\n")
    secrets_repo.commit("secrets: break dev")
    fresh = sdk(running_broker.url, make_token(config), cache_ttl=0)
    with pytest.raises(DecryptFailed):
        fresh.get("dev", "PORT")
    clock.advance(30)  # past the TTL
    caplog.set_level(logging.WARNING, logger="cli.client")
    assert client.get("dev", "PORT").value == 8080
    assert "503 decrypt_failed" in caplog.records[-1].getMessage()
    with pytest.raises(DecryptFailed):  # never cached: nothing stale to give
        client.get("dev", "DEBUG")


# -- retries -------------------------------------------------------------------------------------


def test_transport_errors_and_502_503_504_are_retried_up_to_the_real_answer(running_broker, config):
    client = sdk(running_broker.url, make_token(config), retries=4, cache_ttl=0)
    url = running_broker.url + PORT_PATH
    with responses.RequestsMock() as scripted:
        scripted.add(responses.GET, url, body=requests.ConnectionError("reset"))
        for status in (502, 503, 504):
            scripted.add(responses.GET, url, status=status)
        scripted.add(responses.PassthroughResponse(responses.GET, url))
        assert client.get("dev", "PORT").value == 8080
        assert len(scripted.calls) == 5
    assert [r["status"] for r in reads_of(config, "PORT")] == [200]


def test_retries_n_means_n_more_attempts_then_the_last_error(running_broker, config):
    client = sdk(running_broker.url, make_token(config), retries=2, cache_ttl=0)
    url = running_broker.url + PORT_PATH
    with responses.RequestsMock() as scripted:
        scripted.add(responses.GET, url, status=502)
        with pytest.raises(BrokerError) as caught:
            client.get("dev", "PORT")
        assert len(scripted.calls) == 3 and caught.value.status == 502
    assert reads_of(config, "PORT") == []


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (500, b"oops", BrokerError),
        (429, b'{"error": {"code": "rate_limited", "message": "slow down"}}', RateLimited),
        (400, b'{"error": {"code": "bad_request", "message": "no"}}', BadRequest),
    ],
)
def test_no_other_answer_is_retried(running_broker, config, status, body, expected):
    client = sdk(running_broker.url, make_token(config), retries=3)
    with responses.RequestsMock() as scripted:
        scripted.add(responses.GET, running_broker.url + PORT_PATH, status=status, body=body)
        with pytest.raises(expected):
            client.get("dev", "PORT")
        assert len(scripted.calls) == 1


def test_a_real_503_is_retried(running_broker, config, secrets_repo):
    (secrets_repo.secrets_dir / "broken.enc.yaml").write_text("A: plain\nsops: {}\n")
    secrets_repo.commit("secrets: a broken file")
    client = sdk(running_broker.url, make_token(config), retries=2)
    with pytest.raises(DecryptFailed):
        client.get("broken", "A")
    records = [r for r in read_audit(config) if r["event"] == "secret.read"]
    assert [r["status"] for r in records] == [503, 503, 503]


BATCH_PATH = "/api/v1/vault/dev/batch"
TOKEN_PATH = "/api/v1/vault/tokens/generate"


def refused() -> requests.ConnectionError:
    """What requests raises when nothing listens: the request never left."""
    cause = urllib3.exceptions.NewConnectionError(None, "Connection refused")
    return requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/", cause))


def test_a_post_whose_answer_was_lost_is_not_sent_again(running_broker, config):
    # The broker counted the use, then the answer was lost: a second attempt would come
    # back usage_exhausted and hide what happened.
    token = make_token(config, usage_limit=1)
    client = sdk(running_broker.url, token, retries=3, cache_ttl=0)

    def carried_out_then_lost(request: requests.PreparedRequest):
        real = http.client.HTTPConnection(running_broker.url.removeprefix("http://"), timeout=30)
        real.request("POST", BATCH_PATH, body=request.body, headers=dict(request.headers))
        assert real.getresponse().status == 200
        real.close()
        raise requests.ReadTimeout("read timed out")

    with responses.RequestsMock() as scripted:
        scripted.add_callback(
            responses.POST, running_broker.url + BATCH_PATH, carried_out_then_lost
        )
        with pytest.raises(BrokerUnavailable, match="did not answer"):
            client.read_batch("dev", keys=["PORT"])
        assert len(scripted.calls) == 1
    batches = [r for r in read_audit(config) if r["event"] == "secret.batch"]
    assert [r["status"] for r in batches] == [200]


@pytest.mark.parametrize(
    "answer",
    [
        {"body": requests.ReadTimeout("read timed out")},
        {"body": requests.ConnectionError("connection reset by peer")},
        {"status": 502},
        {"status": 504},
    ],
    ids=["read-timeout", "reset", "502", "504"],
)
def test_a_post_that_may_have_been_carried_out_is_tried_once(running_broker, config, answer):
    client = sdk(running_broker.url, make_token(config), retries=3, cache_ttl=0)
    with responses.RequestsMock() as scripted:
        scripted.add(responses.POST, running_broker.url + TOKEN_PATH, **answer)
        with pytest.raises(VaultError):
            client.generate_token(TokenRequest("billing", "dev", "*"))
        assert len(scripted.calls) == 1


def test_a_post_that_never_reached_the_broker_or_got_503_is_retried(running_broker, config):
    client = sdk(running_broker.url, make_token(config), retries=3, cache_ttl=0)
    url = running_broker.url + BATCH_PATH
    with responses.RequestsMock() as scripted:
        scripted.add(responses.POST, url, body=refused())
        scripted.add(responses.POST, url, body=requests.exceptions.ConnectTimeout("connect"))
        scripted.add(responses.POST, url, status=503)
        scripted.add(responses.PassthroughResponse(responses.POST, url))
        assert client.read_batch("dev", keys=["PORT"]).values == {"PORT": 8080}
        assert len(scripted.calls) == 4
    batches = [r for r in read_audit(config) if r["event"] == "secret.batch"]
    assert [r["status"] for r in batches] == [200]


def test_a_get_is_retried_after_a_timeout(running_broker, config):
    client = sdk(running_broker.url, make_token(config), retries=3, cache_ttl=0)
    url = running_broker.url + PORT_PATH
    with responses.RequestsMock() as scripted:
        scripted.add(responses.GET, url, body=requests.ReadTimeout("read timed out"))
        scripted.add(responses.PassthroughResponse(responses.GET, url))
        assert client.get("dev", "PORT").value == 8080
        assert len(scripted.calls) == 2


def test_backoff_is_full_jitter_within_the_exponential_window():
    waits: list[float] = []

    def refused() -> requests.Response:
        raise requests.ConnectionError("refused")

    policy = RetryPolicy(retries=5, backoff=0.1, backoff_max=0.3)
    for _ in range(20):
        with pytest.raises(requests.ConnectionError):
            send_with_retries(refused, policy, sleep=waits.append)
    assert len(waits) == 100
    windows = [min(0.3, 0.1 * 2**n) for n in range(5)] * 20
    assert all(0 <= w <= high for w, high in zip(waits, windows, strict=True))
    assert len(set(waits)) > 90  # drawn, not fixed
    assert max(waits) > 0.2  # the window widens


# -- the circuit breaker ---------------------------------------------------------------------------


def test_once_the_breaker_is_open_ten_calls_fail_fast(config, tmp_path):
    broker = start_broker(config, tmp_path, workers=1)
    port = int(broker.url.rsplit(":", 1)[1])
    client = sdk(
        broker.url, make_token(config), retries=1, timeout=0.3, breaker_threshold=2, cache_ttl=0
    )
    assert client.get("dev", "PORT").value == 8080
    stop_broker(broker)
    # A listener that never answers takes the broker's place: every attempt that reaches
    # it is counted, and costs the whole timeout.
    with socket.socket() as silent:
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind(("127.0.0.1", port))
        silent.listen(64)
        for _ in range(2):
            with pytest.raises(BrokerUnavailable, match="did not answer within 0.3s"):
                client.get("dev", "PORT")
        assert accepted(silent) == 4  # two calls of two attempts each
        started = time.monotonic()
        for _ in range(10):
            with pytest.raises(BrokerUnavailable, match="circuit open") as caught:
                client.get("dev", "PORT")
        assert time.monotonic() - started < 1.0  # not ten timeouts of 0.3s each
        assert accepted(silent) == 0
    assert "failed 2 calls in a row" in str(caught.value)


def accepted(listener: socket.socket) -> int:
    """How many connections wait in the listener's backlog (and close them)."""
    listener.setblocking(False)
    count = 0
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return count
        connection.close()
        count += 1


def test_after_the_cooldown_one_trial_goes_while_the_others_fail_fast(running_broker, config):
    clock = ManualClock()
    client = sdk(
        running_broker.url,
        make_token(config),
        retries=0,
        cache_ttl=0,
        breaker_threshold=3,
        breaker_cooldown=30,
        clock=clock,
    )
    url = running_broker.url + PORT_PATH
    trial_started, release = threading.Event(), threading.Event()

    def held_trial(request):
        trial_started.set()
        assert release.wait(10)
        return (200, {}, b'{"environment": "dev", "key": "PORT", "value": 1}')

    with responses.RequestsMock() as scripted:
        for _ in range(3):
            scripted.add(responses.GET, url, status=503)
        scripted.add_callback(responses.GET, url, callback=held_trial)
        for _ in range(3):
            with pytest.raises(BrokerError):
                client.get("dev", "PORT")
        assert client.breaker_state == "open"
        with pytest.raises(BrokerUnavailable, match="circuit open"):
            client.get("dev", "PORT")
        assert len(scripted.calls) == 3
        clock.advance(29.9)
        with pytest.raises(BrokerUnavailable, match=r"next try in 0\.1s"):
            client.get("dev", "PORT")
        clock.advance(0.1)
        assert client.breaker_state == "half-open"
        trial_result: list[object] = []
        trial = threading.Thread(target=lambda: trial_result.append(client.get("dev", "PORT")))
        trial.start()
        assert trial_started.wait(10)
        for _ in range(5):
            with pytest.raises(BrokerUnavailable, match="a trial call is under way"):
                client.get("dev", "PORT")
        release.set()
        trial.join(10)
        assert trial_result[0].value == 1
        assert len(scripted.calls) == 4
        assert client.breaker_state == "closed"
    assert client.get("dev", "PORT").value == 8080  # closed again: the real broker answers


def test_a_failed_trial_opens_the_breaker_again(running_broker, config):
    clock = ManualClock()
    client = sdk(
        running_broker.url,
        make_token(config),
        retries=0,
        cache_ttl=0,
        breaker_threshold=1,
        breaker_cooldown=30,
        clock=clock,
    )
    url = running_broker.url + PORT_PATH
    with responses.RequestsMock() as scripted:
        scripted.add(responses.GET, url, body=requests.ConnectionError("refused"))
        scripted.add(responses.GET, url, status=504)
        with pytest.raises(BrokerUnavailable, match="cannot reach"):
            client.get("dev", "PORT")
        with pytest.raises(BrokerUnavailable, match="circuit open"):
            client.get("dev", "PORT")
        clock.advance(30)
        assert client.breaker_state == "half-open"
        with pytest.raises(BrokerError) as caught:  # the trial: a 504
            client.get("dev", "PORT")
        assert caught.value.status == 504
        assert client.breaker_state == "open"
        with pytest.raises(BrokerUnavailable, match=r"next try in 30\.0s"):
            client.get("dev", "PORT")
        assert len(scripted.calls) == 2


def test_any_other_answer_resets_the_failure_count(running_broker, config):
    client = sdk(
        running_broker.url, make_token(config), retries=0, cache_ttl=0, breaker_threshold=2
    )
    url = running_broker.url + PORT_PATH
    with responses.RequestsMock() as scripted:
        scripted.add(responses.GET, url, status=503)
        scripted.add(responses.PassthroughResponse(responses.GET, url))
        scripted.add(responses.GET, url, status=503)
        scripted.add(responses.PassthroughResponse(responses.GET, url))
        for expect_value in (False, True, False, True):
            if expect_value:
                assert client.get("dev", "PORT").value == 8080
            else:
                with pytest.raises(BrokerError):
                    client.get("dev", "PORT")
        assert len(scripted.calls) == 4  # never opened: two failures, but not in a row


def test_an_open_breaker_still_serves_stale_answers(running_broker, config):
    clock = ManualClock()
    client = sdk(
        running_broker.url,
        make_token(config),
        cache_ttl=30,
        retries=0,
        breaker_threshold=1,
        clock=clock,
    )
    assert client.get("dev", "PORT").value == 8080
    clock.advance(30)  # past the TTL
    with responses.RequestsMock() as scripted:
        scripted.add(responses.GET, running_broker.url + PORT_PATH, status=502)
        assert client.get("dev", "PORT").value == 8080  # the 502 opens the breaker
        assert client.get("dev", "PORT").value == 8080  # refused at once, served stale
        assert len(scripted.calls) == 1
        with pytest.raises(BrokerUnavailable, match="circuit open"):
            client.get("dev", "DEBUG")


# -- AWS Secrets Manager's shape -----------------------------------------------------------------


def test_get_secret_value_has_aws_secrets_managers_shape(running_broker, config, secrets_repo):
    first = secrets_repo.commits[-1]
    secrets_repo.write_and_commit("dev", {**DEV_SECRETS, "PORT": 9090}, "secrets: dev/PORT")
    client = sdk(running_broker.url, make_token(config))
    answer = client.get_secret_value(SecretId="dev/DATABASE_URL")
    committed = datetime.fromisoformat(git(secrets_repo.path, "log", "-1", "--format=%cI"))
    assert answer == {
        "Name": "dev/DATABASE_URL",
        "VersionId": secrets_repo.commits[-1],
        "SecretString": DEV_SECRETS["DATABASE_URL"],
        "VersionStages": ["AWSCURRENT"],
        "CreatedDate": committed,
    }
    assert answer["CreatedDate"].tzinfo is not None
    old = client.get_secret_value(SecretId="dev/PORT", VersionId=first)
    first_time = git(secrets_repo.path, "log", "-1", "--format=%cI", first)
    assert (old["SecretString"], old["VersionId"], old["VersionStages"]) == ("8080", first, [])
    assert old["CreatedDate"] == datetime.fromisoformat(first_time)
    assert client.get_secret_value(SecretId="dev/DEBUG")["SecretString"] == "true"
    nested = client.get_secret_value(SecretId="dev/API_KEYS/openai", VersionStage="AWSCURRENT")
    assert nested["Name"] == "dev/API_KEYS/openai" and nested["SecretString"] == "sk-test-openai"
    assert client.get_secret_string("dev/PORT") == "9090"  # aws-secretsmanager-caching's name


@pytest.mark.parametrize(
    "kwargs",
    [
        {"SecretId": "DATABASE_URL"},
        {"SecretId": "dev/"},
        {"SecretId": "dev/PORT", "VersionStage": "AWSPREVIOUS"},
    ],
)
def test_get_secret_value_refuses_what_it_cannot_mean_before_any_request(
    running_broker, config, kwargs
):
    client = sdk(running_broker.url, make_token(config))
    with pytest.raises(BadRequest):
        client.get_secret_value(**kwargs)
    assert read_audit(config) == []


def test_outside_git_the_version_id_is_none(config, tmp_path, secrets_repo):
    plain = tmp_path / "plain"
    shutil.copytree(secrets_repo.secrets_dir, plain)
    broker = start_broker(
        config, tmp_path, workers=1, extra_env={"VANTA_SOPS_FILES_PATH": str(plain)}
    )
    try:
        answer = sdk(broker.url, make_token(config)).get_secret_value(SecretId="dev/PORT")
    finally:
        stop_broker(broker)
    assert answer["VersionId"] is None and answer["CreatedDate"] is None
    assert answer["SecretString"] == "8080" and answer["VersionStages"] == ["AWSCURRENT"]


def test_boto3_style_code_moves_over_with_one_line(running_broker, config, secrets_repo):
    secrets_repo.write_and_commit(
        "dev", {**DEV_SECRETS, "db": '{"user": "app", "password": "pw"}'}, "secrets: dev/db"
    )

    # client = boto3.client("secretsmanager")           <- before
    client = sdk(running_broker.url, make_token(config))  # after
    response = client.get_secret_value(SecretId="dev/db")
    assert json.loads(response["SecretString"]) == {"user": "app", "password": "pw"}
    assert "AWSCURRENT" in response["VersionStages"]


# -- threads -----------------------------------------------------------------------------------


def test_sixteen_threads_share_one_client_and_one_request_per_key(config, tmp_path):
    broker = start_broker(config, tmp_path, workers=2)
    keys = ["DATABASE_URL", "DATABASE_USER", "PORT", "DEBUG"]
    token = make_token(config, environment="dev", usage_limit=len(keys))
    client = sdk(broker.url, token, cache_ttl=60, max_stale=600, retries=1, breaker_threshold=2)
    start = threading.Barrier(16)
    failures: list[BaseException] = []
    seen: list[dict[str, object]] = []

    def work(offset: int) -> None:
        try:
            start.wait(10)
            got = {}
            for i in range(50):
                key = keys[(offset + i) % len(keys)]
                got[key] = client.get("dev", key).value
            seen.append(got)
        except BaseException as exc:  # noqa: BLE001 -- reported below
            failures.append(exc)

    def run_threads() -> None:
        seen.clear()
        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    try:
        run_threads()
        assert failures == []
        assert seen == [{k: DEV_SECRETS[k] for k in keys}] * 16
        assert sorted(
            r["key"] for r in read_audit(config) if r["event"] == "secret.read"
        ) == sorted(keys)
    finally:
        stop_broker(broker)


def test_sixteen_threads_get_stale_answers_together_when_the_broker_dies(config, tmp_path):
    broker = start_broker(config, tmp_path, workers=1)
    keys = ["DATABASE_URL", "PORT"]
    clock = ManualClock()
    client = sdk(
        broker.url,
        make_token(config),
        cache_ttl=30,
        max_stale=60,
        retries=1,
        breaker_threshold=3,
        clock=clock,
    )
    for key in keys:
        client.get("dev", key)
    stop_broker(broker)
    clock.advance(30)  # past the TTL
    start = threading.Barrier(16)
    results: list[object] = []

    def work(n: int) -> None:
        start.wait(10)
        for i in range(20):
            key = keys[(n + i) % 2]
            try:
                results.append(client.get("dev", key).value == DEV_SECRETS[key])
            except BaseException as exc:  # noqa: BLE001
                results.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [True] * 320
    assert client.breaker_state == "open"


def test_a_group_needs_secrets_list_and_has_no_versions(running_broker, config, secrets_repo):
    first = secrets_repo.commits[-1]
    read_only = sdk(running_broker.url, make_token(config, permissions=("secrets:read",)))
    with pytest.raises(NotFound):
        read_only.get_secret_value(SecretId="dev/API_KEYS")
    full = sdk(running_broker.url, make_token(config))
    with pytest.raises(NotFound):
        full.get_secret_value(SecretId="dev/API_KEYS", VersionId=first)
    with pytest.raises(NotFound):
        full.get_secret_value(SecretId="dev/NOTHING_HERE")
    group = full.get_secret_value(SecretId="dev/API_KEYS")
    assert json.loads(group["SecretString"]) == DEV_SECRETS["API_KEYS"]
    assert group["CreatedDate"] is None and group["VersionId"] == first
    requests_before = len(read_audit(config))
    assert full.get_secret_value(SecretId="dev/API_KEYS") == group  # remembered, cached
    assert len(read_audit(config)) == requests_before
