"""``limits.max_open_uploads_per_client`` with replicas sharing one Redis: a client's open
sessions are counted in Redis, so its cap holds whichever replicas its POSTs reach, and a
session finished or cancelled through any replica leaves its count (nothing stays counted
in Redis once it is over)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway.state.sessions import owner_of
from tests.integration.auth.helpers import basic
from tests.integration.state.conftest import redis_state, user_replicas
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer

CAP = 3
ALICE, BOB = basic("alice", "alice-pw"), basic("bob", "bob-pw")


@pytest.fixture(scope="module")
def capped(upstream: EmulatorProcess, redis_server: RedisServer,
           tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[GatewayProcess, GatewayProcess, dict[str, Any]]]:
    state = redis_state(redis_server)
    with user_replicas(tmp_path_factory.mktemp("capped"), upstream, state,
                       {"max_open_uploads_per_client": CAP}) as (a, b):
        yield a, b, state


async def post(session: aiohttp.ClientSession, gateway: GatewayProcess, name: str,
               headers: dict[str, str]) -> tuple[int, str, Any]:
    async with session.post(f"{gateway.url}/v2/{name}/blobs/uploads/", headers=headers) as r:
        body = await r.json(content_type=None) if r.status != 202 else None
        if r.status == 429:
            assert r.headers["Retry-After"]
            assert body["errors"][0]["code"] == "TOOMANYREQUESTS"
        return r.status, r.headers.get("Location", ""), body


async def opened(session: aiohttp.ClientSession, gateway: GatewayProcess, name: str,
                 headers: dict[str, str]) -> str:
    status, location, body = await post(session, gateway, name, headers)
    assert status == 202, (gateway.url, body)
    return location


async def owner_set(state: dict[str, Any], user: str) -> list[bytes]:
    raw = aioredis.Redis.from_url(state["redis_url"])
    try:
        key = f"{state['key_prefix']}owner:{{{owner_of(f'user:{user}')}}}"
        members: list[bytes] = await raw.zrange(key, 0, -1)
        return members
    finally:
        await raw.aclose()


async def test_the_cap_holds_across_replicas_and_frees_through_any_of_them(
        capped: tuple[GatewayProcess, GatewayProcess, dict[str, Any]]) -> None:
    a, b, state = capped
    mine, theirs = f"alice/app-{os.urandom(3).hex()}", f"bob/app-{os.urandom(3).hex()}"
    async with aiohttp.ClientSession() as session:
        locations = [await opened(session, a, mine, ALICE),
                     await opened(session, b, mine, ALICE),
                     await opened(session, a, mine, ALICE)]
        for gateway in (a, b):
            assert (await post(session, gateway, mine, ALICE))[0] == 429
        assert len(await owner_set(state, "alice")) == CAP
        bobs = [await opened(session, b, theirs, BOB)]  # bob is not held up by alice

        # Cancelled through the other replica than the one that opened it.
        async with session.delete(b.url + locations.pop(0), headers=ALICE) as r:
            assert r.status == 204, await r.text()
        locations.append(await opened(session, a, mine, ALICE))
        assert (await post(session, b, mine, ALICE))[0] == 429

        # Written on one replica, finished on the other.
        data = os.urandom(2000)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        location = locations.pop(0)
        octet = {**ALICE, "Content-Type": "application/octet-stream"}
        async with session.patch(a.url + location, data=data, headers=octet) as r:
            assert r.status == 202, await r.text()
        async with session.put(f"{b.url}{location}?digest={digest}", headers=octet) as r:
            assert r.status == 201, await r.text()
        locations.append(await opened(session, b, mine, ALICE))
        assert (await post(session, a, mine, ALICE))[0] == 429

        for location in locations:
            async with session.delete(a.url + location, headers=ALICE) as r:
                assert r.status == 204
        for location in bobs:
            async with session.delete(b.url + location, headers=BOB) as r:
                assert r.status == 204
        assert await owner_set(state, "alice") == [] == await owner_set(state, "bob")
        again = [await opened(session, gateway, mine, ALICE) for gateway in (a, b, a)]
        assert len(await owner_set(state, "alice")) == CAP
        for location in again:
            async with session.delete(b.url + location, headers=ALICE):
                pass


async def test_concurrent_posts_to_both_replicas_never_pass_the_cap(
        capped: tuple[GatewayProcess, GatewayProcess, dict[str, Any]]) -> None:
    a, b, state = capped
    mine = f"alice/burst-{os.urandom(3).hex()}"
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(post(session, gateway, mine, ALICE)
                                         for gateway in (a, b) * 4))
        statuses = sorted(status for status, _, _ in answers)
        assert statuses == [202] * CAP + [429] * (8 - CAP), answers
        assert len(await owner_set(state, "alice")) == CAP
        for status, location, _ in answers:
            if status == 202:
                async with session.delete(a.url + location, headers=ALICE) as r:
                    assert r.status == 204
        assert await owner_set(state, "alice") == []
