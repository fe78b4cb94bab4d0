"""One client that asks for many blobs at once and reads none, in proxy mode.

Each proxied read holds one of the 100 connections of the gateway's HTTP client until its
answer is sent or cut (``limits.send_idle_timeout_seconds``, 60 s). 110 raw sockets from one
address (``SO_RCVBUF`` 4096, a 16 MiB layer asked for, nothing read) took all of them: 101
connections to ECR, and another client's pull of another blob waited for the pool
(``upstream.http_pool_timeout_seconds`` and the connect timeout, 40.7 s) and got 503; the
holder could do it again on every reconnect. Now a client streams at most
``limits.max_blob_downloads_per_client`` blobs from storage at once: a read beyond them
waits for one of its own (holding nothing) up to ``limits.blob_download_wait_seconds``, then
gets 429 with Retry-After; the other clients are served meanwhile. Reads of the blob cache
hold no connection and are not counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import aiohttp
import pytest

from gateway.blobcache.store import FILL_WAIT_SECONDS
from tests.integration.trust.test_slow_readers import _hold
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, digest_of
from tests.support.processes import tcp_connections

MiB = 1024 * 1024
SHARE = 4  # limits.max_blob_downloads_per_client of the gateways below
WAIT = 2.0  # limits.blob_download_wait_seconds
HOLDERS = 110  # more than the 100 connections of the gateway's HTTP client
PROMPT = 10.0  # seconds another client's pull may take (milliseconds when idle)
BYSTANDER = "127.0.0.2"  # another address: another client
CACHE_WAIT = 60.0  # limits.blob_download_wait_seconds of the gateway with a blob cache


def _config(wait: float = WAIT, **blobs: object) -> dict[str, object]:
    return {"blobs": {"mode": "proxy", **blobs},
            # the holders stay for the whole test; a pull waiting for the pool fails in 5 s
            "limits": {"max_blob_downloads_per_client": SHARE,
                       "blob_download_wait_seconds": wait, "send_idle_timeout_seconds": 300.0},
            "upstream": {"http_pool_timeout_seconds": 5.0}}


@pytest.fixture(scope="module")
def proxy_gateway(upstream: EmulatorProcess,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("proxy"), _config(),
                        upstream_url=upstream.url) as gw:
        yield gw


@pytest.fixture(scope="module")
def cache_gateway(upstream: EmulatorProcess,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data = tmp_path_factory.mktemp("cached")
    with GatewayProcess(data, _config(CACHE_WAIT, cache={"path": str(data / "cache")}),
                        upstream_url=upstream.url) as gw:
        yield gw


async def _blobs(session: aiohttp.ClientSession, gateway: GatewayProcess, repo: str,
                 *sizes: int) -> list[tuple[str, bytes]]:
    """(URL, bytes) of a blob of each size, each the layer of an image."""
    blobs = []
    for size in sizes:
        blob = os.urandom(size)
        await OciClient(session, gateway.url).push_image(repo, f"s{len(blobs)}", [blob])
        blobs.append((f"{gateway.url}/v2/{repo}/blobs/{digest_of(blob)}", blob))
    return blobs


async def _pull(url: str, address: str = BYSTANDER) -> tuple[int, bytes, float]:
    """(status, body, seconds) of a GET from ``address``."""
    began = time.monotonic()
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as client, client.get(
            url, timeout=aiohttp.ClientTimeout(total=120)) as reply:
        return reply.status, await reply.read(), time.monotonic() - began


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes, float]:
    """(status, headers, body: all of it for an error, none for a blob) a holder was sent,
    and when its head arrived (time.monotonic)."""
    sock.settimeout(60)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(4096)
        assert chunk, got
        got += chunk
    arrived = time.monotonic()
    head, _, body = got.partition(b"\r\n\r\n")
    line, *lines = head.decode("latin-1").split("\r\n")
    status = int(line.split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    if status in (200, 206):
        return status, headers, b"", arrived
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(4096)
        assert chunk, body
        body += chunk
    return status, headers, body, arrived


async def _refusals(session: aiohttp.ClientSession, gateway: GatewayProcess) -> float:
    async with session.get(f"{gateway.url}/metrics") as reply:
        text = await reply.text()
    match = re.search(r"^ecr_gateway_blob_download_refusals_total (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else 0.0


def _ecr_connections(gateway: GatewayProcess, upstream: EmulatorProcess) -> int:
    assert gateway.process is not None
    port = urlsplit(upstream.url).port
    assert port is not None
    return tcp_connections(gateway.process.pid, remote_ports=[port])


async def test_a_client_holds_its_share_of_downloads_not_the_pool(
        proxy_gateway: GatewayProcess, upstream: EmulatorProcess, repo: str,
        session: aiohttp.ClientSession) -> None:
    """110 holders of a 16 MiB layer from one address: SHARE of them are streamed (and held),
    the others get 429 TOOMANYREQUESTS with Retry-After once the wait is over; another
    client's pull of another blob is served at once meanwhile (before: 503 after the pool
    wait, every connection held by the holders)."""
    (url, layer), (other_url, other) = await _blobs(session, proxy_gateway, repo,
                                                    16 * MiB, 2 * MiB)
    assert (await _pull(url, "127.0.0.1"))[:2] == (200, layer)  # download URL known, pools up
    refusals_before = await _refusals(session, proxy_gateway)
    idle = _ecr_connections(proxy_gateway, upstream)  # kept alive: the API's, the pool's

    began = time.monotonic()
    holders = _hold(url, HOLDERS)
    try:
        await asyncio.sleep(1.0)  # the holders' reads begin (and, before, took the pool)
        status, body, seconds = await _pull(other_url)
        assert (status, seconds < PROMPT) == (200, True), (status, body[:300], seconds)
        assert body == other
        held = _ecr_connections(proxy_gateway, upstream)
        assert held <= idle + SHARE, f"{held} connections to ECR ({idle} before the holders)"
        answers = [_answer(sock) for sock in holders]
    finally:
        for sock in holders:
            sock.close()
    streamed = [a for a in answers if a[0] == 200]
    refused = [a for a in answers if a[0] != 200]
    assert len(streamed) == SHARE, [a[:2] for a in answers]
    for status, headers, body, arrived in refused:
        assert status == 429 and headers.get("retry-after") == "1", (status, headers, body)
        error = json.loads(body)["errors"][0]
        assert error["code"] == "TOOMANYREQUESTS", error
        assert error["detail"] == {"limit": SHARE}, error
        assert arrived - began >= WAIT * 0.9, arrived - began  # it waited for its own first
    assert await _refusals(session, proxy_gateway) - refusals_before == HOLDERS - SHARE
    assert await proxy_gateway.logged("limits.max_blob_downloads_per_client")
    # The holders gone, their slots are given back: the same address reads again.
    deadline = time.monotonic() + 30
    while (answer := await _pull(url, "127.0.0.1"))[0] != 200:
        assert time.monotonic() < deadline, answer[:2]
        await asyncio.sleep(0.5)
    assert answer[1] == layer
    assert not [line for line in proxy_gateway.log_lines if "Traceback" in line]


async def test_cached_reads_are_not_counted_nor_fills_held(
        cache_gateway: GatewayProcess, repo: str, session: aiohttp.ClientSession) -> None:
    """A client holding its share of downloads (ranged reads: never cached) still reads a
    blob the cache holds, at once: that holds no connection. Its read of a cold blob, waiting
    for one of its own, claims no cache fill: another client's read of that blob goes ahead
    at once (a fill claimed while waiting held it back for the cache's 5 s fill wait)."""
    (url, _), (cached_url, cached), (cold_url, cold) = await _blobs(
        session, cache_gateway, repo, 16 * MiB, 2 * MiB, 2 * MiB)
    assert (await _pull(cached_url))[:2] == (200, cached)  # now in the cache

    holders = _hold(url, SHARE, "Range: bytes=0-\r\n")
    try:
        assert [_answer(sock)[0] for sock in holders] == [206] * SHARE
        status, body, seconds = await _pull(cached_url, "127.0.0.1")  # the holders' address
        assert (status, seconds < PROMPT) == (200, True), (status, body[:300], seconds)
        assert body == cached
        holders += _hold(cold_url, 1)  # waits for one of its own (CACHE_WAIT)
        await asyncio.sleep(0.5)
        status, body, seconds = await _pull(cold_url)
        prompt = seconds < FILL_WAIT_SECONDS * 0.7  # before: the whole fill wait
        assert (status, prompt) == (200, True), (status, body[:300], seconds)
        assert body == cold
    finally:
        for sock in holders:
            sock.close()
