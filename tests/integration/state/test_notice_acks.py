"""A write through one replica is answered only once the others applied its cache notice
(gateway/state/events.py): the next request, wherever it lands, sees the change. Real
redis-server; the replicas are two notice channels of one process, so the test decides
when each one's event loop gets to run."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import OutOfMemoryError

from gateway.state.connect import RedisConnection
from gateway.state.events import ACK_WITHIN, RedisCacheEvents, RepoKey
from tests.support.redis import RedisServer, SharedRedis

REPO: RepoKey = (None, "us-east-1", "app")


async def _subscribed(events: RedisCacheEvents, applied: list[str]) -> None:
    ready = asyncio.Event()
    events.listen(lambda kind, repo, ref: applied.append(ref), ready.set)
    await asyncio.wait_for(ready.wait(), 10)


async def test_a_write_returns_once_the_other_replicas_applied_its_notice(
        redis_server: SharedRedis) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    a = RedisCacheEvents(RedisConnection(redis_server.url), prefix)
    b = RedisCacheEvents(RedisConnection(redis_server.url), prefix)
    c = RedisCacheEvents(RedisConnection(redis_server.url), prefix)
    seen: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    try:
        for name, events in (("a", a), ("b", b), ("c", c)):
            await _subscribed(events, seen[name])
        for ref in ("v1", "v2", "v3"):
            started = time.monotonic()
            await a.publish("tag", REPO, ref)
            # Nothing else ran in between: both others had applied it before publish ended,
            # and said so (the wait did not run out).
            assert seen["b"][-1:] == [ref] and seen["c"][-1:] == [ref]
            assert time.monotonic() - started < ACK_WITHIN, ref
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


async def test_a_full_redis_delays_no_write(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """Redis at ``maxmemory`` with ``noeviction`` (the shipped presets) refuses every write
    that may take memory, not PUBLISH: notices and their acknowledgments still go, so a
    write is answered as soon as the others applied its notice, not after ACK_WITHIN."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    with RedisServer(tmp_path / "redis", extra=["--maxmemory-policy", "noeviction"]) as server:
        a = RedisCacheEvents(RedisConnection(server.url), prefix)
        b = RedisCacheEvents(RedisConnection(server.url), prefix)
        raw = aioredis.Redis.from_url(server.url)
        seen: list[str] = []
        try:
            await _subscribed(a, [])
            await _subscribed(b, seen)
            await raw.config_set("maxmemory", (await raw.info("memory"))["used_memory"] // 2)
            with pytest.raises(OutOfMemoryError):
                await raw.rpush(f"{prefix}probe", "1")  # full, as the test needs
            with caplog.at_level(logging.WARNING, logger="gateway.state.events"):
                for ref in ("v1", "v2", "v3"):
                    started = time.monotonic()
                    await a.publish("tag", REPO, ref)
                    waited = time.monotonic() - started
                    assert seen[-1:] == [ref]
                    assert waited < ACK_WITHIN / 2, (ref, waited)
            assert "not acknowledged" not in caplog.text
            assert "other replicas applied it" not in caplog.text
        finally:
            await raw.aclose()
            for events in (a, b):
                await events.close()


async def test_an_earlier_versions_notice_is_acknowledged_on_its_list(
        redis_server: RedisServer) -> None:
    """During a rolling upgrade a replica of an earlier version publishes notices without
    ``acks`` and waits for acknowledgments pushed onto ``ack:{<notice id>}``."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    b = RedisCacheEvents(RedisConnection(redis_server.url), prefix)
    raw = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    seen: list[str] = []
    try:
        await _subscribed(b, seen)
        notice = json.dumps({"from": "earlier", "id": "n1", "kind": "tag",
                             "repo": list(REPO), "ref": "v1"})
        assert await raw.publish(f"{prefix}cache", notice) == 1
        assert await raw.blpop([f"{prefix}ack:{{n1}}"], timeout=5) is not None
        assert seen == ["v1"]
    finally:
        await raw.aclose()
        await b.close()
