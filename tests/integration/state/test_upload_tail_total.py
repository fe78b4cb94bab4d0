"""``limits.max_upload_tail_bytes`` with replicas sharing one Redis: each client's tails
(an upload's last bytes under ECR's 5 MiB part minimum, kept in Redis until the next
request) were bounded per client only, so many clients (logins, addresses behind a trusted
proxy, IPv6 /64s) each at its own bound together filled Redis's memory, after which every
push of everyone got 503. Past the bound over all clients, counted in Redis whichever
replica saved the tail, a PATCH that would keep more gets 429 with the upload's Range (its
bytes not received) and Redis holds no more; a cancelled upload makes room again."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.integration.state.conftest import redis_state, replica
from tests.integration.state.test_upload_tail_bound import _tails_held
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer

MiB = 1024 * 1024
TAIL = MiB
PER_CLIENT = 4 * MiB
TOTAL = 12 * MiB
CLIENTS = 6


@pytest.fixture(scope="module")
def replicas(upstream: EmulatorProcess, redis_server: RedisServer,
             tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[GatewayProcess, GatewayProcess, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("total")
    state = redis_state(redis_server)
    config: dict[str, Any] = {
        "trusted_proxies": ["127.0.0.1/32"],
        "auth": {"allow_anonymous_on_public_address": True},
        "limits": {"max_upload_tail_bytes_per_client": PER_CLIENT,
                   "max_upload_tail_bytes": TOTAL}}
    with replica(root / "a", upstream, state, **config) as a, \
            replica(root / "b", upstream, state, **config) as b:
        yield a, b, state


async def _park(session: aiohttp.ClientSession, gateway: GatewayProcess, location: str,
                headers: dict[str, str]) -> aiohttp.ClientResponse:
    async with session.patch(f"{gateway.url}{location}", data=os.urandom(TAIL),
                             headers={**headers, "Content-Type": "application/octet-stream",
                                      "Content-Range": f"0-{TAIL - 1}"}) as reply:
        await reply.read()
        return reply


async def test_tails_of_many_clients_stop_at_the_bound_across_replicas(
        replicas: tuple[GatewayProcess, GatewayProcess, dict[str, Any]],
        redis_server: RedisServer, repo: str) -> None:
    a, b, state = replicas
    kept: list[tuple[str, dict[str, str]]] = []
    refused: list[tuple[str, dict[str, str], aiohttp.ClientResponse]] = []
    async with aiohttp.ClientSession() as session:
        for i in range(CLIENTS):
            headers = {"X-Forwarded-For": f"203.0.113.{i + 1}"}
            for j in range(PER_CLIENT // TAIL):
                opener, writer = (a, b) if (i + j) % 2 else (b, a)
                async with session.post(f"{opener.url}/v2/{repo}/blobs/uploads/",
                                        headers=headers) as opened:
                    assert opened.status == 202, await opened.text()
                    location = opened.headers["Location"]
                reply = await _park(session, writer, location, headers)
                if reply.status == 202:
                    kept.append((location, headers))
                else:
                    refused.append((location, headers, reply))
        held = await _tails_held(redis_server, state)
        assert held <= TOTAL, f"{held} bytes of tails in Redis, bound {TOTAL}"
        assert len(kept) == TOTAL // TAIL
        for _, _, reply in refused:
            assert reply.status == 429
            assert reply.headers["Retry-After"]
            assert reply.headers["Range"] == "0-0"  # nothing of it received

        # A cancelled upload's tail makes room for another's, through the other replica.
        location, headers = kept[0]
        async with session.delete(f"{a.url}{location}", headers=headers) as cancel:
            assert cancel.status == 204
        location, headers, _ = refused[0]
        reply = await _park(session, b, location, headers)
        assert reply.status == 202
        assert reply.headers["Range"] == f"0-{TAIL - 1}"
        assert await _tails_held(redis_server, state) <= TOTAL
    assert "Traceback" not in "\n".join(a.log_lines + b.log_lines)
