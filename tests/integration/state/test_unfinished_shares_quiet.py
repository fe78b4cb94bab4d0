"""A client's share of unfinished bytes is written to Redis when it changes, and otherwise
only often enough to stay live: clients sending part after part do not have the replica
write every other client's share again on each round (a script call per client holding
bytes, up to twenty times a second, on every replica; the clients as many as the addresses
sending)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway.state.sessions import owner_of
from gateway.state.unfinished_shares import EVERY_SECONDS
from tests.integration.state.conftest import redis_state, replica
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient
from tests.support.polling import until
from tests.support.redis import RedisServer, redis_cli

PART = 5 * 1024 * 1024  # the emulator's part size, as set below
BUSY_SECONDS = 4.0
IDLE, BUSY = "192.0.2.1", ("192.0.2.2", "192.0.2.3", "192.0.2.4")


@pytest.fixture
def gateway(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[GatewayProcess, str]]:
    """A replica sharing Redis behind a trusted proxy (which says the clients' addresses),
    and its keys' prefix."""
    state = redis_state(redis_server)
    with EmulatorProcess(tmp_path / "ecr", env={"ECR_EMULATOR_PART_SIZE": str(PART)}) as ecr, \
            replica(tmp_path / "gw", ecr, state, trusted_proxies=["127.0.0.1/32"],
                    auth={"allow_anonymous_on_public_address": True},
                    limits={"max_abandoned_upload_bytes_per_client": 1 << 30}) as gateway:
        yield gateway, state["key_prefix"]


def _client(gateway: GatewayProcess, address: str) -> OciClient:
    return OciClient(aiohttp.ClientSession(headers={"X-Forwarded-For": address}), gateway.url)


async def _push_until(client: OciClient, repo: str, end: float) -> int:
    pushed = 0
    while time.monotonic() < end:
        await client.push_blob(repo, os.urandom(PART + 1), chunk=PART)
        pushed += 1
    return pushed


async def test_an_idle_clients_share_is_not_written_again_for_each_part_of_others(
        gateway: tuple[GatewayProcess, str], redis_server: RedisServer, repo: str) -> None:
    gw, prefix = gateway
    idle_key = f"{prefix}unfinished:{{{owner_of(f'addr:{IDLE}')}}}"
    idle, busy = _client(gw, IDLE), [_client(gw, address) for address in BUSY]
    try:
        held = await idle.patch(await idle.start(repo), os.urandom(PART), 0)
        assert held.status == 202, held.body
        await until(lambda: redis_cli(redis_server.port, "hlen", idle_key) == "1", 15)

        raw = aioredis.Redis.from_url(redis_server.url)
        end = time.monotonic() + BUSY_SECONDS
        try:
            pushing = asyncio.gather(*(_push_until(client, repo, end) for client in busy))
            written: set[bytes] = set()  # each write says its Redis time
            while not pushing.done():
                written.update(await raw.hvals(idle_key))
                await asyncio.sleep(0.02)
            pushed = await pushing
        finally:
            await raw.aclose()
    finally:
        for client in (idle, *busy):
            await client.session.close()
    assert sum(pushed) >= 2 * len(BUSY), pushed
    writes = len(written)
    # written again to stay live (once a second), not once per round of the others' parts
    assert 1 <= writes <= BUSY_SECONDS / EVERY_SECONDS + 3, (writes, pushed)
    assert redis_cli(redis_server.port, "hlen", idle_key) == "1"  # still counted
    assert "Traceback" not in "\n".join(gw.log_lines)
