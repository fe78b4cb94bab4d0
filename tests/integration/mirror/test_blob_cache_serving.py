"""How proxy mode serves from its blob cache: one fill per cold blob, a cached file removed
mid-read, and an event loop that never waits for the disk while files are evicted."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import aiohttp

from tests.integration.mirror.conftest import StartGateway
from tests.integration.mirror.helpers import (
    Image,
    access_log_until,
    downloads,
    get,
    push_image,
    sha256,
)
from tests.integration.reliability.helpers import faults_admin
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

MiB = 1024 * 1024
BIG = 768 * MiB  # a cached file whose unlink takes a while


def _proxy(start_gateway: StartGateway, cache: Path, max_bytes: int = 64 * MiB
           ) -> GatewayProcess:
    return start_gateway({"blobs": {"mode": "proxy", "cache": {"path": str(cache),
                                                               "max_bytes": max_bytes}},
                          "cache": {"tag_ttl_seconds": 60}})


def _delay_next(upstream: EmulatorProcess, action: str, seconds: float) -> None:
    faults_admin(upstream, "POST", {"action": action, "latency": seconds, "count": 1})


async def _image(gateway: GatewayProcess, size: int) -> Image:
    return await push_image(gateway.url, f"serve/{uuid.uuid4().hex[:10]}", layer_sizes=(size,))


async def test_concurrent_cold_reads_share_one_fetch(
        gateway: GatewayProcess, upstream: EmulatorProcess, start_gateway: StartGateway,
        tmp_path: Path) -> None:
    """Eight clients ask for the same cold blob at once: storage is read once, and every
    client gets the blob (the others wait for that fill and are served the cached copy)."""
    proxy = _proxy(start_gateway, tmp_path / "cache")
    image = await _image(gateway, 3 * MiB)
    digest = sha256(image.layers[0])
    url = f"{proxy.url}/v2/{image.name}/blobs/{digest}"
    upstream.clear_requests()
    # The download URL arrives late, so all eight reads are under way before any fetch.
    _delay_next(upstream, "GetDownloadUrlForLayer", 1.0)
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(get(session, url) for _ in range(8)))
    assert [(status, body == image.layers[0]) for status, _, body in answers] == \
        [(200, True)] * 8
    assert [d["digest"] for d in downloads(upstream)] == [digest]


async def test_cached_file_removed_before_the_send_is_still_served(
        gateway: GatewayProcess, upstream: EmulatorProcess, start_gateway: StartGateway,
        tmp_path: Path) -> None:
    """The cached file disappears between the lookup and the send (evicted, or removed by
    hand): the read still gets the blob rather than a bare 404. The window is held open by
    delaying the repository-membership check made after the lookup."""
    cache = tmp_path / "cache"
    proxy = _proxy(start_gateway, cache)
    image = await _image(gateway, 500_000)
    digest = sha256(image.layers[0])
    url = f"{proxy.url}/v2/{image.name}/blobs/{digest}"
    async with aiohttp.ClientSession() as session:
        assert (await get(session, url))[2] == image.layers[0]
    cached = cache / "sha256" / digest.split(":", 1)[1]
    assert cached.exists()
    proxy.restart()  # membership is no longer known: the read asks ECR after the lookup
    logged = len(proxy.access_log())
    _delay_next(upstream, "BatchCheckLayerAvailability", 2.0)
    async with aiohttp.ClientSession() as session:
        read = asyncio.create_task(get(session, url))
        await asyncio.sleep(1.0)
        cached.unlink()
        status, headers, body = await read
    assert (status, headers["Content-Type"]) == (200, "application/octet-stream")
    assert body == image.layers[0]
    # Sent by sendfile, past aiohttp's writer, yet counted in the access log.
    reads = access_log_until(proxy, lambda es: len(es) > logged)[logged:]
    assert [e["bytes_out"] >= len(body) for e in reads if e["method"] == "GET"] == [True]


def _write_synced(path: Path, size: int) -> None:
    """A file with real data blocks on disk (freeing them is what makes an unlink slow)."""
    block = os.urandom(MiB)
    with open(path, "wb") as handle:
        for _ in range(size // MiB):
            handle.write(block)
        handle.flush()
        os.fsync(handle.fileno())


async def _slowest_head_while_filling(head_url: str, get_url: str, body: bytes,
                                     evicted: Path) -> float:
    """How much slower the slowest of back-to-back HEAD requests made while a GET fills the
    cache (and that fill evicts ``evicted``) is than the slowest in a quiet second before."""
    latencies: list[float] = []
    stop = asyncio.Event()

    async def probe(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            async with session.head(head_url) as r:
                assert r.status == 200
            latencies.append(time.perf_counter() - started)

    async with aiohttp.ClientSession() as session:
        async with session.head(head_url) as r:  # membership known: no upstream call later
            assert r.status == 200
        prober = asyncio.create_task(probe(session))
        await asyncio.sleep(1.0)  # the quiet second: this machine's own hiccups
        quiet = len(latencies)
        async with aiohttp.ClientSession() as other:
            assert (await get(other, get_url))[2] == body
        for _ in range(100):
            if not await asyncio.to_thread(evicted.exists):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        stop.set()
        await prober
    assert not await asyncio.to_thread(evicted.exists)
    return max(latencies[quiet:]) - max(latencies[:quiet])


async def test_evicting_a_large_file_does_not_stall_other_requests(
        gateway: GatewayProcess, start_gateway: StartGateway, tmp_path: Path) -> None:
    """A large cached file (768 MiB) is evicted to make room for a new blob while HEAD requests keep
    coming: none of them waits for the unlink, which takes hundreds of milliseconds (it frees
    every block of the file) and would stall every request if done on the event loop. Two
    evictions are measured and the better one counts, each against a quiet second before it:
    on a busy machine any single request may be descheduled for a while (beside two busy
    CPUs and a disk writer, HEADs took 0.23 s), but a stall on the event loop hits every
    eviction."""
    cache = tmp_path / "cache"
    (cache / "sha256").mkdir(parents=True)
    # Found at start, never read: the least recently read, so the first to go.
    bigs = [cache / "sha256" / os.urandom(32).hex() for _ in range(2)]
    for big in bigs:
        await asyncio.to_thread(_write_synced, big, BIG)
    image = await push_image(gateway.url, f"serve/{uuid.uuid4().hex[:10]}",
                             layer_sizes=(2 * MiB, 2 * MiB))
    urls = [f"/v2/{image.name}/blobs/{sha256(layer)}" for layer in image.layers]
    # Room for both files and 1 MiB: the first 2 MiB fill evicts the first file.
    proxy = _proxy(start_gateway, cache, max_bytes=2 * BIG + MiB)
    slowest = [await _slowest_head_while_filling(proxy.url + urls[0], proxy.url + urls[0],
                                                 image.layers[0], bigs[0])]
    # Now room for the second file, the first blob and 1 MiB: the next fill evicts it.
    proxy.config["blobs"]["cache"]["max_bytes"] = BIG + 3 * MiB
    proxy.restart()
    slowest.append(await _slowest_head_while_filling(
        proxy.url + urls[0], proxy.url + urls[1], image.layers[1], bigs[1]))
    # Each unlink takes ~0.3 s on the event loop (more on a busy machine); a HEAD normally
    # takes a few ms, and the bound leaves room for a busy machine's scheduling hiccups.
    assert min(slowest) < 0.12, slowest
