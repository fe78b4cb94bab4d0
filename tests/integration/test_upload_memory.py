"""A blob pushed as one long PATCH (docker's way) never sits whole in the gateway's memory:
its peak resident size grows by a few parts at most, whatever the blob's size; and what
uploads freed goes back to the system once they are idle."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.processes import peak_rss

MiB = 1024 * 1024
SIZE = 256 * MiB
# The part being sent, the next one being cut and hashed, and the one arriving: a handful
# of 10 MiB parts, never the blob's 256 MiB.
GROWTH_LIMIT = 96 * MiB


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM back to the current RSS



@pytest.mark.slow
async def _push_streamed(http: aiohttp.ClientSession, url: str, repo: str,
                         body: AsyncIterator[bytes], digest: str) -> None:
    """A blob pushed as one streamed PATCH (chunked), then the closing PUT."""
    async with http.post(f"{url}/v2/{repo}/blobs/uploads/") as r:
        location = r.headers["Location"]
    base = url if location.startswith("/") else ""
    async with http.patch(f"{base}{location}", data=body,
                          headers={"Content-Type": "application/octet-stream"}) as r:
        assert r.status == 202, await r.text()
        location = r.headers["Location"]
    sep = "&" if "?" in location else "?"
    async with http.put(f"{base}{location}{sep}digest={digest}") as r:
        assert r.status == 201, await r.text()


async def test_a_long_patch_keeps_the_gateway_flat(gateway: GatewayProcess, repo: str) -> None:
    assert gateway.process is not None
    pid = gateway.process.pid
    block = os.urandom(MiB)
    hasher = hashlib.sha256()
    for n in range(SIZE // MiB):
        hasher.update(block[:-4] + n.to_bytes(4, "big"))
    digest = "sha256:" + hasher.hexdigest()

    async def body() -> AsyncIterator[bytes]:
        for n in range(SIZE // MiB):
            yield block[:-4] + n.to_bytes(4, "big")

    async with aiohttp.ClientSession() as http:
        # A small push first, so the baseline has every code path loaded.
        async with http.post(f"{gateway.url}/v2/{repo}/blobs/uploads/?digest="
                             f"sha256:{hashlib.sha256(b'x').hexdigest()}", data=b"x") as r:
            assert r.status == 201, await r.text()
        _reset_peak(pid)
        before = peak_rss(pid)
        await _push_streamed(http, gateway.url, repo, body(), digest)
    growth = peak_rss(pid) - before
    assert growth < GROWTH_LIMIT, f"peak RSS grew {growth // MiB} MiB for a {SIZE // MiB} MiB blob"


@pytest.fixture(scope="module")
def debug_gateway(upstream: EmulatorProcess,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("gateway"), {"log_level": "debug"},
                        upstream_url=upstream.url) as gw:
        yield gw


async def test_freed_memory_goes_back_once_uploads_are_idle(debug_gateway: GatewayProcess,
                                                            repo: str) -> None:
    """The heap keeps what uploads freed unless trimmed (after 32 concurrent 256 MiB
    uploads: 449 MiB of a 533 MiB RSS, all of it free); a second after the last upload
    request ends, the gateway gives it back."""
    gateway = debug_gateway
    data = os.urandom(24 * MiB)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(data), MiB):
            yield data[start:start + MiB]

    async with aiohttp.ClientSession() as http:
        await _push_streamed(http, gateway.url, repo, body(), digest)
    assert await gateway.logged("uploads idle: freed heap memory given back", 10.0), \
        "\n".join(gateway.log_lines[-20:])
