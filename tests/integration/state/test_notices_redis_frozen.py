"""Cache notices lost while Redis is frozen (SIGSTOP: connections stay open, nothing is
answered, so no subscription breaks): a tag moved through one replica meanwhile is served
by the other from its cache no longer than until Redis answers again (and a little), not
until ``cache.tag_ttl_seconds``.

Real processes: one redis-server (frozen and thawed with SIGSTOP / SIGCONT), an emulator,
two gateway replicas whose tag answers would otherwise be kept for ten minutes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.state.connect import RedisConnection
from gateway.state.events import RedisCacheEvents, RepoKey
from tests.integration.state.conftest import redis_state, replica_pair
from tests.integration.state.test_cache_coherence import OCI_MANIFEST, get, image_manifest
from tests.integration.state.test_cache_coherence import digest_of as digest
from tests.support.emulator import EmulatorProcess
from tests.support.polling import until
from tests.support.redis import RedisServer

REPO: RepoKey = (None, "us-east-1", "app")
LONG = {"tag_ttl_seconds": 600.0, "manifest_revalidate_seconds": 600.0}
# After SIGCONT: each replica's PING every redis_probe_seconds (1 s), a subscription made
# again, a notice published: about a second, with wide room for a loaded machine.
SEEN_WITHIN = 15.0


async def _put(session: aiohttp.ClientSession, url: str, name: str, tag: str,
               manifest: bytes) -> tuple[int, float]:
    began = time.monotonic()
    async with session.put(f"{url}/v2/{name}/manifests/{tag}", data=manifest,
                           headers={"Content-Type": OCI_MANIFEST},
                           timeout=aiohttp.ClientTimeout(total=60)) as r:
        return r.status, time.monotonic() - began


# "first": the tag move is the first command a meets the frozen Redis with (its PUBLISH
# times out, but was written: the thawed Redis delivers it); "refused": a already took Redis
# as down (its PUBLISH is not even sent).
# "short": Redis thawed right after the move (b may never have noticed the freeze);
# "long": frozen long enough for b to take Redis as down too.
@pytest.mark.parametrize(("when", "frozen_for"), [("first", "short"), ("refused", "short"),
                                                  ("first", "long")])
async def test_a_tag_moved_while_redis_was_frozen_is_seen_once_it_answers(
        upstream: EmulatorProcess, tmp_path: Path, when: str, frozen_for: str) -> None:
    name = f"frozen/{when}-{frozen_for}-{os.urandom(3).hex()}"
    with RedisServer(tmp_path / "redis") as server, \
            replica_pair(tmp_path, upstream, redis_state(server), cache=LONG) as (a, b):
        assert server.process is not None
        async with aiohttp.ClientSession() as session:
            old = await image_manifest(session, a.url, name)
            assert (await _put(session, a.url, name, "t", old))[0] == 201
            new = await image_manifest(session, a.url, name)  # its blobs stored before the freeze
            assert await get(session, b.url, name, "t") == (200, digest(old))  # b keeps it

            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                if when == "refused":  # an upload needs Redis: a takes it as down
                    async with session.post(f"{a.url}/v2/{name}/blobs/uploads/") as r:
                        assert r.status == 503, await r.text()
                status, took = await _put(session, a.url, name, "t", new)
                during = None
                if frozen_for == "long":  # b's own PING finds no answer: b flushes at once
                    assert await b.logged("taken as down;", SEEN_WITHIN), "\n".join(b.log_lines)
                    during = await get(session, b.url, name, "t")
                else:
                    await asyncio.sleep(1.0)
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            thawed = time.monotonic()
            # ECR took the move: the client is told so.
            assert status == 201, status
            served = [await get(session, b.url, name, "t")]
            while served[-1] != (200, digest(new)) and time.monotonic() - thawed < SEEN_WITHIN:
                await asyncio.sleep(0.1)
                served.append(await get(session, b.url, name, "t"))
            stale_for = time.monotonic() - thawed
            # b, which took Redis as down, flushes again once it listens again.
            again = frozen_for != "long" or await b.logged(
                "subscribed again after a lost connection", SEEN_WITHIN)

    print(f"\nRedis frozen ({when}, {frozen_for}): a answered {status} in {took:.2f}s; b "
          f"served the old digest {sum(d == (200, digest(old)) for d in served)} times, the "
          f"new one {stale_for:.2f}s after Redis was thawed")
    assert served[-1] == (200, digest(new)), (
        f"b still serves the old digest {stale_for:.1f}s after Redis answers again")
    for gateway in (a, b):
        assert "Traceback" not in "\n".join(gateway.log_lines)
    if during is not None:  # read from ECR: b's caches were flushed when it took Redis down
        assert during == (200, digest(new)), "b served the old digest while Redis was down"
    assert again, "\n".join(b.log_lines)


async def test_a_notice_lost_while_redis_was_down_flushes_the_others_once_it_answers(
        tmp_path: Path) -> None:
    """The publisher's side alone: b never PINGs (it cannot notice the freeze), a's notice
    is refused (a took Redis as down); once Redis answers, b is told to flush."""
    prefix = f"t{os.urandom(4).hex()}:"
    with RedisServer(tmp_path / "redis") as server:
        assert server.process is not None
        a = RedisCacheEvents(RedisConnection(server.url), prefix)
        to_b = RedisConnection(server.url)
        b = RedisCacheEvents(to_b, prefix, ping_every=3600.0)
        flushed: list[float] = []
        applied: list[str] = []
        try:
            b.listen(lambda kind, repo, ref: applied.append(ref),
                     lambda: flushed.append(time.monotonic()))
            assert await until(lambda: len(flushed) == 1, 20), "b never subscribed"
            await a.publish("tag", REPO, "v1")
            assert applied == ["v1"]
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                began = time.monotonic()
                await a.publish("tag", REPO, "v2")  # no answer: a takes Redis as down
                await a.publish("tag", REPO, "v3")  # refused at once, never sent
                took = time.monotonic() - began
                await asyncio.sleep(1.0)
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            thawed = time.monotonic()
            assert await until(lambda: len(flushed) > 1, SEEN_WITHIN), (
                f"b was not told to flush within {SEEN_WITHIN:g}s of Redis answering again")
            print(f"\nnotices lost while Redis was frozen: publish gave up in {took:.2f}s, "
                  f"b flushed {flushed[1] - thawed:.2f}s after Redis was thawed")
            assert to_b.health.outages == 0  # b saw nothing itself: a's notice made it flush
        finally:
            await a.close()
            await b.close()
