"""Gateways started with a test's own configuration on the module's emulator, and an HTTP
client per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

StartGateway = Callable[[dict[str, Any]], GatewayProcess]


@pytest.fixture(scope="module")
def start_gateway(upstream: EmulatorProcess,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartGateway]:
    """Start gateways with given configurations; all stop when the module ends."""
    started: list[GatewayProcess] = []

    def start(config: dict[str, Any]) -> GatewayProcess:
        gw = GatewayProcess(tmp_path_factory.mktemp("gw"), config, upstream_url=upstream.url)
        gw.start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for the test, closed after it."""
    async with aiohttp.ClientSession() as session:
        yield session

