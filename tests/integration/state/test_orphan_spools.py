"""A running gateway drops the spools of uploads whose sessions went elsewhere: cancelled or
expired through another replica, or lost with a Redis that restarted empty. Its idle sweep
drops a spool no session names once it has not been written for the idle timeout; a live
upload's spool stays, and that upload completes."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from tests.integration.state.conftest import redis_state, replica
from tests.support.emulator import EmulatorProcess
from tests.support.oci import OciClient, digest_of
from tests.support.redis import RedisServer

MiB = 1024 * 1024
IDLE = 3.0  # uploads.idle_timeout_seconds: the sweep runs every second


def _spools(gateway_dir: Path) -> set[str]:
    return {path.name for path in (gateway_dir / "staging" / "spool").iterdir()}


async def test_spools_of_lost_sessions_are_dropped_while_the_gateway_runs(
        upstream: EmulatorProcess, redis_server: RedisServer, tmp_path: Path,
        repo: str) -> None:
    state = redis_state(redis_server)
    folder = tmp_path / "gateway"
    with replica(folder, upstream, state, uploads={"idle_timeout_seconds": IDLE}) as gateway:
        async with aiohttp.ClientSession() as session:
            client = OciClient(session, gateway.url)
            lost = []
            for _ in range(3):
                location = await client.start(repo)
                reply = await client.patch(location, os.urandom(MiB), 0)
                assert reply.status == 202
                lost.append(location.rstrip("/").rsplit("/", 1)[1])
            live = os.urandom(3 * MiB)
            location = await client.start(repo)
            live_id = location.rstrip("/").rsplit("/", 1)[1]
            assert set(lost) <= await asyncio.to_thread(_spools, folder)
            # The store loses the three sessions (as a Redis without persistence that
            # restarted would, or another replica's DELETE).
            store = aioredis.Redis.from_url(redis_server.url)
            try:
                for upload in lost:
                    assert await store.delete(f"{state['key_prefix']}session:{{{upload}}}")
            finally:
                await store.aclose()
            # The live upload goes on meanwhile, a chunk every half idle timeout.
            offset, deadline = 0, time.monotonic() + 2 * IDLE + 3
            step = 64 * 1024
            while time.monotonic() < deadline and offset + step <= len(live):
                reply = await client.patch(location, live[offset:offset + step], offset)
                assert reply.status == 202, reply
                location, offset = reply.headers["Location"], offset + step
                if not set(lost) & await asyncio.to_thread(_spools, folder):
                    break
                await asyncio.sleep(IDLE / 2)
            left = await asyncio.to_thread(_spools, folder)
            assert not set(lost) & left, "spools of lost sessions still there"
            assert live_id in left  # the live upload's spool is kept
            reply = await client.patch(location, live[offset:], offset)
            assert reply.status == 202, reply
            done = await client.put(reply.headers["Location"], digest_of(live))
            assert done.status == 201, done
            assert await client.get_blob(repo, digest_of(live)) == live
