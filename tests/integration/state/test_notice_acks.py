"""A write through one replica is answered only once the others applied its cache notice
(gateway/state/events.py): the next request, wherever it lands, sees the change. Real
redis-server; the replicas are two notice channels of one process, so the test decides
when each one's event loop gets to run."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest

from gateway.state.connect import RedisConnection
from gateway.state.events import ACK_WITHIN, RedisCacheEvents, RepoKey
from tests.support.redis import RedisServer

REPO: RepoKey = (None, "us-east-1", "app")


async def _subscribed(events: RedisCacheEvents, applied: list[str]) -> None:
    ready = asyncio.Event()
    events.listen(lambda kind, repo, ref: applied.append(ref), ready.set)
    await asyncio.wait_for(ready.wait(), 10)


async def test_a_write_returns_once_the_other_replicas_applied_its_notice(
        redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    a = RedisCacheEvents(RedisConnection(redis_server.url), prefix)
    b = RedisCacheEvents(RedisConnection(redis_server.url), prefix)
    c = RedisCacheEvents(RedisConnection(redis_server.url), prefix)
    seen: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    try:
        for name, events in (("a", a), ("b", b), ("c", c)):
            await _subscribed(events, seen[name])
        for ref in ("v1", "v2", "v3"):
            await a.publish("tag", REPO, ref)
            # Nothing else ran in between: both others had applied it before publish ended.
            assert seen["b"][-1:] == [ref] and seen["c"][-1:] == [ref]
        assert seen["a"] == []  # a replica's own notices are not applied again
    finally:
        for events in (a, b, c):
            await events.close()


async def test_a_replica_that_does_not_answer_delays_a_write_by_at_most_the_bound(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """A replica whose listener is stuck: the write goes on after ACK_WITHIN, logged."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    a = RedisCacheEvents(RedisConnection(redis_server.url), prefix)
    stuck = RedisConnection(redis_server.url).client(decode_responses=True)
    pubsub = stuck.pubsub()
    try:
        await _subscribed(a, [])
        await pubsub.subscribe(f"{prefix}cache")  # subscribed, but never reads or answers
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="gateway.state.events"):
            await a.publish("tag", REPO, "v1")
        waited = time.monotonic() - started
        assert ACK_WITHIN - 0.1 <= waited < ACK_WITHIN + 1.0, waited
        assert "0 of 1 other replicas applied it" in caplog.text
    finally:
        await pubsub.aclose()
        await stuck.aclose()
        await a.close()
