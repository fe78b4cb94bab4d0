"""Redis full (``maxmemory`` with ``noeviction``: every write that may take memory is refused
with OOM): a client's request gets a clear 503, never a 500 or half-stored state; what it
was told is received stays, and once Redis has room again the upload goes on from its
Range, on either replica, and completes with the right bytes; no tail stays counted
against ``limits.max_upload_tail_bytes``."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import OutOfMemoryError

from tests.integration.state.conftest import redis_state, replica_pair
from tests.integration.state.test_replicas import (
    OCTET,
    digest_of,
    finish,
    offset_of,
    patch,
    push_manifest,
    read_blob,
    start,
)
from tests.support.emulator import EmulatorProcess
from tests.support.redis import RedisServer

MiB = 1024 * 1024


async def _fill(raw: aioredis.Redis) -> int:
    """Write junk until Redis refuses: the keys written."""
    for index in range(10_000):
        try:
            await raw.set(f"junk:{index}", b"j" * (256 * 1024))
        except OutOfMemoryError:
            return index
    raise AssertionError("Redis never filled up")


async def test_a_full_redis_refuses_clearly_and_loses_nothing_acknowledged(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis",
                         extra=["--maxmemory", "24mb", "--maxmemory-policy", "noeviction"])
    name = f"replicas/full-{os.urandom(4).hex()}"
    layer = os.urandom(3 * MiB)
    with server, replica_pair(tmp_path, upstream, state := redis_state(server)) as (a, b):
        raw = aioredis.Redis.from_url(server.url)
        try:
            async with aiohttp.ClientSession() as session:
                location = await start(session, a, name)
                location = await patch(session, a, location, layer[:MiB], 0)
                junk = await _fill(raw)

                for gateway, method, url, body in (
                        (b, "PATCH", location, layer[MiB:2 * MiB]),
                        (a, "POST", f"/v2/{name}/blobs/uploads/", b""),
                        (b, "PUT", f"{location}&digest={digest_of(layer)}"
                         if "?" in location else f"{location}?digest={digest_of(layer)}",
                         layer[MiB:])):
                    headers = dict(OCTET)
                    if method == "PATCH":
                        headers["Content-Range"] = f"{MiB}-{2 * MiB - 1}"
                    async with session.request(method, gateway.url + url, data=body,
                                               headers=headers) as r:
                        text = await r.text()
                        assert r.status == 503, (method, r.status, text)
                        assert r.headers["Retry-After"], method
                        assert (await r.json())["errors"][0]["code"] == "UNAVAILABLE"

                # Room again: what the client was told stays, on either replica.
                await raw.delete(*(f"junk:{index}" for index in range(junk)))
                assert await offset_of(session, a, location) == MiB
                assert await offset_of(session, b, location) == MiB
                location = await patch(session, b, location, layer[MiB:], MiB)
                await finish(session, a, location, digest_of(layer))
                await push_manifest(session, b, name, layer)
                assert await read_blob(session, a, name, digest_of(layer)) == layer
                # No tail is left counted against the bound over all clients.
                assert not await raw.keys(f"{state['key_prefix']}*tail*")
        finally:
            await raw.aclose()
    assert "Traceback" not in "\n".join(a.log_lines + b.log_lines)
