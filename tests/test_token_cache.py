"""Verified tokens remembered per worker: a repeat costs a lookup, never a wider answer
than `tokens.verify` gives (times re-checked on every hit, bad tokens never remembered)."""

from __future__ import annotations

import inspect
import time

import pytest
from support.tokens import make_token

import broker.tokens.verified as token_cache
from broker.config import Config
from broker.errors import TokenInvalid
from broker.scope import PERMISSIONS, Scope
from broker.tokens.claims import LEEWAY_SECONDS, MintRequest, mint, verify
from broker.tokens.verified import VerifiedTokens


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def counting_verify(token: str, *args, **kwargs):
        calls.append(token)
        return verify(token, *args, **kwargs)

    monkeypatch.setattr(token_cache, "verify", counting_verify)
    return calls


def tokens_for(config: Config, clock: Clock | None = None, **kwargs) -> VerifiedTokens:
    return VerifiedTokens(
        config.keyring,
        issuer=config.jwt_issuer,
        audience=config.jwt_audience,
        clock=clock or time.time,
        **kwargs,
    )


def test_a_token_seen_before_is_answered_without_verifying_again(config, verify_calls):
    cache = tokens_for(config)
    token = make_token(config, environment="dev", usage_limit=3)
    first = cache.verify(token)
    assert first == verify(
        token, config.keyring, issuer=config.jwt_issuer, audience=config.jwt_audience
    )
    for _ in range(10):
        assert cache.verify(token) is first
    assert verify_calls == [token]


def test_a_remembered_token_is_verified_again_once_out_of_its_time_window(config, verify_calls):
    clock = Clock()
    cache = tokens_for(config, clock)
    now = int(clock.now)
    request = MintRequest("svc", Scope("dev", "*", PERMISSIONS), 1, None)
    token, claims = mint(
        request, config.keyring, issuer=config.jwt_issuer, audience=config.jwt_audience, now=now
    )
    cache.verify(token)
    clock.now = claims.expires_at + LEEWAY_SECONDS - 0.5  # still inside the leeway
    cache.verify(token)
    assert len(verify_calls) == 1
    clock.now = claims.expires_at + LEEWAY_SECONDS  # past it: not answered from memory
    cache.verify(token)  # (the real clock still finds it valid)
    assert len(verify_calls) == 2
    clock.now = now - LEEWAY_SECONDS - 1  # before iat/nbf less the leeway: the same
    cache.verify(token)
    assert len(verify_calls) == 3


def test_an_expired_or_tampered_token_is_refused_and_never_remembered(config, verify_calls):
    cache = tokens_for(config)
    request = MintRequest("svc", Scope("dev", "*", PERMISSIONS), 1, None)
    expired, _ = mint(
        request,
        config.keyring,
        issuer=config.jwt_issuer,
        audience=config.jwt_audience,
        now=int(time.time()) - 60 - LEEWAY_SECONDS - 5,
    )
    good = make_token(config)
    head, payload, signature = good.split(".")
    flipped = "B" if signature[0] == "A" else "A"
    tampered = f"{head}.{payload}.{flipped}{signature[1:]}"
    for bad in (expired, tampered, "not-a-jwt", good + "x"):
        for _ in range(2):
            with pytest.raises(TokenInvalid):
                cache.verify(bad)
    assert len(verify_calls) == 8


def test_the_cache_stays_bounded(config):
    cache = tokens_for(config, max_entries=3)
    for _ in range(7):
        cache.verify(make_token(config))
        assert len(cache._entries) <= 3


@pytest.mark.skipif(
    "max_ttl_minutes" not in inspect.signature(verify).parameters,
    reason="tokens.verify has no max_ttl_minutes yet",
)
def test_a_token_outliving_the_longest_lifetime_is_refused_as_verify_refuses_it(config):
    clock = Clock()
    cache = tokens_for(config, clock, max_ttl_minutes=30)
    too_long = make_token(config, ttl_minutes=90)
    for _ in range(2):
        with pytest.raises(TokenInvalid):
            cache.verify(too_long)
    assert not cache._entries
    fine = make_token(config, ttl_minutes=30)
    claims = cache.verify(fine)
    assert cache._entries.get(fine)[1] >= claims.expires_at - 30 * 60 - LEEWAY_SECONDS
