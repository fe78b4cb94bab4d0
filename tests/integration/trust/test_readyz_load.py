"""The attacker reaches the registry port and asks ``/readyz``, which needs no credentials,
as fast as they can. Each check used to open a TCP connection to the ECR endpoint and close
it: thousands a second left as many sockets in TIME-WAIT toward ECR, the ports the
gateway's own new connections need. Concurrent checks now share one connection, and a
success stands for a second."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.hostile import Forwarder

REQUESTS = 600


async def test_readyz_at_any_rate_opens_few_connections_to_ecr(
        upstream: EmulatorProcess, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    target = urlsplit(upstream.url)
    assert target.hostname is not None and target.port is not None
    async with Forwarder((target.hostname, target.port)) as ecr:
        gateway = GatewayProcess(tmp_path / "gw", upstream_url=upstream.url)
        gateway.config["upstream"]["endpoint_url"] = ecr.url  # signed for the emulator
        with gateway:

            async def readyz() -> int:
                async with session.get(gateway.url + "/readyz") as response:
                    await response.read()
                    return response.status

            assert await readyz() == 200
            before = ecr.connections
            started = time.monotonic()
            statuses = await asyncio.gather(*(readyz() for _ in range(REQUESTS)))
            seconds = time.monotonic() - started
            opened = ecr.connections - before
    assert set(statuses) == {200}
    # One check a second, and a few of the gateway's own pooled connections.
    assert opened <= seconds + 5, (f"{REQUESTS} requests of /readyz in {seconds:.1f}s "
                                   f"opened {opened} connections to ECR")
