"""The authorization-token cache: one upstream call per key, renewal ahead of expiry."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Hashable

from gateway.ecr.tokens import AuthToken, TokenCache


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make_fetch(clock: Clock, lifetime: float = 12 * 3600):
    calls: list[Hashable] = []

    async def fetch(key: Hashable) -> AuthToken:
        calls.append(key)
        await asyncio.sleep(0.01)  # the upstream round trip during which others pile up
        return AuthToken("AWS", f"pw{len(calls)}", None, clock.now + lifetime, clock.now)

    return fetch, calls


async def test_concurrent_first_requests_make_one_call() -> None:
    clock = Clock()
    fetch, calls = make_fetch(clock)
    cache = TokenCache(fetch, clock=clock)
    tokens = await asyncio.gather(*(cache.get(("id", "us-east-1")) for _ in range(500)))
    assert len(calls) == 1
    assert {t.password for t in tokens} == {"pw1"}


async def test_keys_are_per_identity_and_region() -> None:
    clock = Clock()
    fetch, calls = make_fetch(clock)
    cache = TokenCache(fetch, clock=clock)
    await asyncio.gather(cache.get(("a", "us-east-1")), cache.get(("a", "eu-west-1")),
                         cache.get(("b", "us-east-1")), cache.get(("a", "us-east-1")))
    assert sorted(calls) == [("a", "eu-west-1"), ("a", "us-east-1"), ("b", "us-east-1")]


async def test_token_is_renewed_before_it_expires() -> None:
    clock = Clock()
    fetch, calls = make_fetch(clock)
    cache = TokenCache(fetch, clock=clock, refresh_margin=1800)
    first = await cache.get("k")
    clock.now = first.expires_at - 1801  # still outside the margin: cached
    assert (await cache.get("k")).password == "pw1"
    clock.now = first.expires_at - 1799  # inside the margin: renewed before use
    renewed = await cache.get("k")
    assert renewed.password == "pw2" and renewed.expires_at > first.expires_at
    assert len(calls) == 2


async def test_a_failed_fetch_is_not_cached() -> None:
    clock = Clock()
    attempts = 0

    async def flaky(key: Hashable) -> AuthToken:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("upstream down")
        return AuthToken("AWS", "ok", None, clock.now + 3600, clock.now)

    cache = TokenCache(flaky, clock=clock)
    try:
        await cache.get("k")
    except RuntimeError:
        pass
    assert (await cache.get("k")).password == "ok"


def test_token_parsed_from_ecr_answer_and_secret_not_in_repr() -> None:
    raw = base64.b64encode(b"AWS:s3cret-password").decode()
    token = AuthToken.from_ecr({"authorizationToken": raw, "expiresAt": 2_000_000.0,
                                "proxyEndpoint": "https://1.dkr.ecr.x.amazonaws.com"}, 1.0)
    assert (token.username, token.password) == ("AWS", "s3cret-password")
    assert token.expires_at == 2_000_000.0
    assert "s3cret" not in repr(token)
