"""``limits.max_upload_tail_bytes_per_client`` with replicas sharing one Redis: a client that
opens uploads and leaves each with a tail under ECR's 5 MiB part minimum keeps those bytes
in Redis's memory until its sessions idle out. Its tails are counted in Redis, whichever
replica saved them; a request whose tail does not fit is cut back to what the client was
told before it (the Range says so), so Redis never holds more than the bound for one
client, nothing acknowledged is lost, another client is not held back, and every upload
still completes once the client sends again from its Range."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.integration.auth.helpers import basic
from tests.integration.state.conftest import redis_state, user_replicas
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer

MiB = 1024 * 1024
BOUND = 7 * MiB
ALICE, BOB = basic("alice", "alice-pw"), basic("bob", "bob-pw")


@pytest.fixture(scope="module")
def bounded(upstream: EmulatorProcess, redis_server: RedisServer,
            tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[GatewayProcess, GatewayProcess, dict[str, Any]]]:
    state = redis_state(redis_server)
    with user_replicas(tmp_path_factory.mktemp("bounded"), upstream, state,
                       {"max_upload_tail_bytes_per_client": BOUND}) as (a, b):
        yield a, b, state


async def _patch(session: aiohttp.ClientSession, gateway: GatewayProcess, location: str,
                 data: bytes, start: int, auth: dict[str, str]) -> tuple[str, str]:
    """PATCH a chunk: (the Range answered, the next Location)."""
    headers = {**auth, "Content-Type": "application/octet-stream",
               "Content-Range": f"{start}-{start + len(data) - 1}"}
    async with session.patch(gateway.url + location, data=data, headers=headers) as r:
        assert r.status == 202, (r.status, await r.text())
        return r.headers["Range"], r.headers["Location"]


async def _start(session: aiohttp.ClientSession, gateway: GatewayProcess, name: str,
                 auth: dict[str, str]) -> str:
    async with session.post(f"{gateway.url}/v2/{name}/blobs/uploads/", headers=auth) as r:
        assert r.status == 202, await r.text()
        return r.headers["Location"]


async def _finish(session: aiohttp.ClientSession, gateway: GatewayProcess, location: str,
                  layer: bytes, auth: dict[str, str]) -> None:
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    async with session.put(f"{gateway.url}{location}&digest={digest}"
                           if "?" in location else f"{gateway.url}{location}?digest={digest}",
                           headers=auth) as r:
        assert r.status == 201, (r.status, await r.text())
    async with session.head(f"{gateway.url}/v2/{location.split('/blobs/')[0][4:]}/blobs/"
                            f"{digest}", headers=auth) as r:
        assert r.status == 200 and int(r.headers["Content-Length"]) == len(layer)


async def _tails_held(redis_server: RedisServer, state: dict[str, Any]) -> int:
    """The tail bytes in every session hash of this gateway's prefix."""
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        total = 0
        async for key in raw.scan_iter(match=f"{state['key_prefix']}session:*"):
            total += await raw.hstrlen(key, "tail")
        return total
    finally:
        await raw.aclose()


async def test_a_clients_tails_stop_at_the_bound_across_replicas(
        bounded: tuple[GatewayProcess, GatewayProcess, dict[str, Any]],
        redis_server: RedisServer) -> None:
    a, b, state = bounded
    layers = [os.urandom(6 * MiB + i) for i in range(3)]
    three = 3 * MiB
    async with aiohttp.ClientSession() as session:
        name = f"alice/tails-{os.urandom(3).hex()}"
        locations = [await _start(session, a, name, ALICE) for _ in layers]
        # Two tails of 3 MiB fit (one through each replica); the third does not: none of it
        # is kept, and the Range says so.
        ranges = []
        for gateway, layer, i in ((a, layers[0], 0), (b, layers[1], 1), (a, layers[2], 2)):
            answered, locations[i] = await _patch(session, gateway, locations[i], layer[:three],
                                                  0, ALICE)
            ranges.append(answered)
        assert ranges == [f"0-{three - 1}", f"0-{three - 1}", "0-0"]
        # A tail growing past the bound is cut back to what the client was told before.
        answered, locations[1] = await _patch(session, a, locations[1],
                                              layers[1][three:three + 3 * MiB // 2], three, ALICE)
        assert answered == f"0-{three - 1}"
        assert await _tails_held(redis_server, state) == 2 * three <= BOUND

        # Another client is not held back.
        bob_layer = os.urandom(4 * MiB)
        bob = await _start(session, b, f"bob/tails-{os.urandom(3).hex()}", BOB)
        answered, bob = await _patch(session, b, bob, bob_layer, 0, BOB)
        assert answered == f"0-{len(bob_layer) - 1}"
        await _finish(session, a, bob, bob_layer, BOB)

        # Every upload completes, each sent again from its Range.
        answered, locations[0] = await _patch(session, b, locations[0], layers[0][three:], three,
                                              ALICE)
        assert answered == f"0-{len(layers[0]) - 1}"
        await _finish(session, a, locations[0], layers[0], ALICE)
        answered, locations[2] = await _patch(session, b, locations[2], layers[2], 0, ALICE)
        await _finish(session, b, locations[2], layers[2], ALICE)
        answered, locations[1] = await _patch(session, a, locations[1], layers[1][three:], three,
                                              ALICE)
        await _finish(session, b, locations[1], layers[1], ALICE)
    assert await _tails_held(redis_server, state) == 0
    assert await a.logged("max_upload_tail_bytes_per_client")  # both refusals went through a
    assert "Traceback" not in "\n".join(a.log_lines + b.log_lines)
