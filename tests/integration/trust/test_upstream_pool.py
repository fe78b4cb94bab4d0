"""Pull-through upstreams that stall every request draw on connections of their own: a
few of them, each holding its share (its manifest turns and its blob transfers), never
delay the gateway's reads of its own storage, such as a proxy-mode blob read of an image
pushed to ECR."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.hostile import Server
from tests.support.oci import OciClient, digest_of

UPSTREAMS = ("docker.io", "ghcr.io", "quay.io")


async def test_attacker_stalled_upstreams_never_starve_proxy_blob_reads(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """Three upstreams hold every manifest request and send blob headers and then nothing;
    clients ask each for 16 tags and 32 blobs at once (144 connections upstream, more than
    one pool of 100). A blob of an image pushed to ECR, read in proxy mode, still comes at
    once."""
    release = asyncio.Event()
    reached = [0]

    async def stalling(request: web.Request) -> web.StreamResponse:
        reached[0] += 1
        if "/blobs/" in request.path:
            response = web.StreamResponse(headers={"Content-Length": str(1024 * 1024)})
            await response.prepare(request)
            await release.wait()
            return response
        await release.wait()
        return web.Response(status=503)

    async with Server(stalling) as a, Server(stalling) as b, Server(stalling) as c:
        mirrors = {host: {"repository_prefix": host.split(".")[0], "upstream": {
            "url": server.url, "timeout_seconds": 60, "blob_grace_seconds": 60}}
            for host, server in zip(UPSTREAMS, (a, b, c), strict=True)}
        config = {"mirrors": mirrors, "blobs": {"mode": "proxy"}}
        layer = os.urandom(64 * 1024)
        # Pushed through another gateway: this one holds none of it and reads it from ECR.
        with GatewayProcess(tmp_path / "pusher", {}, upstream_url=upstream.url) as pusher:
            async with aiohttp.ClientSession(auto_decompress=False) as session:
                await OciClient(session, pusher.url).push_image("team/app", "v1", [layer])
        with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
            async with aiohttp.ClientSession(auto_decompress=False) as session:
                oci = OciClient(session, gw.url)
                async with aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=0)) as flood:
                    async def ask(path: str, ns: str) -> None:
                        async with flood.get(f"{gw.url}{path}", params={"ns": ns}) as r:
                            await r.read()

                    asks = [asyncio.create_task(ask(f"/v2/library/app/manifests/t{i}", ns))
                            for ns in UPSTREAMS for i in range(16)]
                    asks += [asyncio.create_task(ask(
                        "/v2/library/app/blobs/sha256:" + f"{i:x}".rjust(64, "c"), ns))
                        for ns in UPSTREAMS for i in range(32)]
                    await asyncio.sleep(4)
                    held = reached[0]
                    started = time.monotonic()
                    try:
                        async with asyncio.timeout(10):
                            read = await oci.get_blob("team/app", digest_of(layer))
                    except TimeoutError:
                        read = b""
                    took = time.monotonic() - started
                    release.set()
                    for task in asks:
                        task.cancel()
                    await asyncio.gather(*asks, return_exceptions=True)
    print(f"{held} requests held upstream; the proxy-mode blob read took {took:.1f} s",
          file=sys.stderr)
    assert held >= 100, held
    assert read == layer, f"no blob after {took:.1f} s"
    assert took < 2, took
