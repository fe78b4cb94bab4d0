"""The gateway's own HTTP client gives up on an upstream that accepts a connection and then
says nothing: the client gets an OCI error within the configured read timeout, not a hang."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.auth.helpers import request
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """Accepts connections, reads what comes, never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()


async def test_silent_registry_gets_an_oci_error_within_the_timeout(
        upstream: EmulatorProcess, silent_server: str, tmp_path: Path) -> None:
    config = {"routes": [{"prefix": "silent", "upstream_kind": "ecr-public",
                          "registry_alias": "", "registry_url": silent_server}],
              "upstream": {"http_read_timeout_seconds": 1.5}}
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gateway:
        started = time.monotonic()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            answer = await request(session, "GET",
                                   f"{gateway.url}/v2/silent/alias/app/manifests/latest")
        took = time.monotonic() - started
    assert answer.status == 503, answer.body
    assert answer.code == "UNAVAILABLE"
    assert answer.headers.get("Retry-After")
    assert took < 10, took
