"""A pull-through upstream (or sync source) that plays the attacker with time and numbers:
it stalls tag checks many pulls wait on, dribbles tag pages one just inside its deadline
after another, names a token realm on another local port (another service of the gateway's
host), or answers blob requests with headers and then nothing. What it can hold stays
bounded: one tag check at a time, a listing's whole time, a number of blob transfers."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.pullthrough.upstream import OciUpstream, UpstreamError
from tests.integration.trust.test_upstream_trust import (
    NS,
    PASSWORD,
    _config,
    _Moving,
    _oci_error,
    stalled_tag_check,
)
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.hostile import Server, challenging


async def test_attacker_stalling_the_tag_check_is_asked_once_for_concurrent_pulls(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """Past the tag TTL, the upstream holds every HEAD of the tag past the read timeout: ten
    pulls of that tag at once share one check (one HEAD upstream), not ten."""
    async with stalled_tag_check(upstream, session, tmp_path) as (url, source, heads):
        async def pull() -> int:
            async with session.get(url, params=NS) as r:
                assert await r.read() == source.manifest
                return r.status

        started = time.monotonic()
        statuses = await asyncio.gather(*(pull() for _ in range(10)))
        took = time.monotonic() - started
    assert statuses == [200] * 10, statuses
    assert heads[0] == 1, f"{heads[0]} HEADs upstream for 10 concurrent pulls of one tag"
    assert took < 3, took


async def test_attacker_tag_pages_each_within_their_deadline_end_within_the_listings(
        session: aiohttp.ClientSession) -> None:
    """Each page comes just inside its own deadline and names the next: the listing as a
    whole ends within TAG_LIST_DEADLINE_TIMEOUTS read timeouts (20 seconds at 1), not after
    a thousand pages."""
    pages = [0]

    async def slow_pages(request: web.Request) -> web.StreamResponse:
        pages[0] += 1
        await asyncio.sleep(0.5)  # within the read timeout and the page's deadline
        return web.json_response({"name": "x", "tags": [f"v{pages[0]}"]}, headers={
            "Link": f'</v2/x/tags/list?n=1000&last=v{pages[0]}>; rel="next"'})

    async with Server(slow_pages) as hostile:
        started = time.monotonic()
        with pytest.raises(UpstreamError, match="not listed whole within 20 seconds"):
            await asyncio.wait_for(
                OciUpstream(hostile.url, lambda: session, timeout=1).tags("x"), 40)
        took = time.monotonic() - started
    assert 19 < took < 25, took
    assert pages[0] < 45, pages[0]


async def test_attacker_realm_on_another_local_port_never_gets_the_credentials(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """The upstream is on loopback and names a token realm on 127.0.0.1 too, at another
    port (where the emulator or Redis listens): not the registry's own, never asked."""
    async def token(request: web.Request) -> web.StreamResponse:
        return web.json_response({"token": "stolen", "expires_in": 300})

    async with Server(token) as local_service:
        realm = f'Bearer realm="{local_service.url}/token",service="hub"'
        async with Server(challenging(realm)) as hostile:
            with GatewayProcess(tmp_path / "gw", _config(hostile.url, tmp_path),
                                upstream_url=upstream.url) as gw:
                async with session.get(f"{gw.url}/v2/library/nginx/manifests/latest",
                                       params=NS) as r:
                    status, body = r.status, await r.read()
                assert _oci_error(status, body)["code"] == "UNAVAILABLE"
                assert local_service.seen == [], "another local port was asked for a token"
                assert await gw.logged("names the token realm host 127.0.0.1")
                assert not any(PASSWORD in line for line in gw.log_lines)


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


class _StalledBlobs:
    """An upstream answering every request with a blob's headers and then nothing until
    ``release`` is set; ``started`` counts the transfers it began."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        self.started += 1
        response = web.StreamResponse(headers={"Content-Length": str(10 * 1024 * 1024)})
        await response.prepare(request)
        await self.release.wait()
        return response


def _bounded_mirror(url: str) -> dict[str, object]:
    return {"mirrors": {"docker.io": {"repository_prefix": "docker-hub", "upstream": {
        "url": url, "max_blob_transfers": 4}}}}


async def _pull_blob(client: aiohttp.ClientSession, gateway_url: str,
                     digest: str) -> tuple[int, str | None, bytes]:
    """(status, Retry-After, body) of a blob pull; a transfer in flight (200) never sends its
    body, so it is not read."""
    async with client.get(f"{gateway_url}/v2/library/app/blobs/{digest}", params=NS) as r:
        if r.status == 200:
            return r.status, None, b""
        return r.status, r.headers.get("Retry-After"), await r.read()


async def test_attacker_stalled_blob_transfers_are_bounded_per_upstream(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """Blob requests for made-up digests, each answered with headers and then nothing: at
    most ``max_blob_transfers`` of them reach the upstream at once (each holds a connection,
    a spool file and two spooling threads until the grace ends); the clients beyond get a
    503 with Retry-After after a short wait, not a transfer each."""
    stalling = _StalledBlobs()
    async with Server(stalling) as hostile:
        with GatewayProcess(tmp_path / "gw", _bounded_mirror(hostile.url),
                            upstream_url=upstream.url) as gw:
            assert gw.process is not None
            before = _threads(gw.process.pid), len(os.listdir(f"/proc/{gw.process.pid}/fd"))
            pulls = [asyncio.create_task(_pull_blob(
                session, gw.url, "sha256:" + f"{i:x}".rjust(64, "a"))) for i in range(16)]
            await asyncio.sleep(2)
            during = _threads(gw.process.pid), len(os.listdir(f"/proc/{gw.process.pid}/fd"))
            reached = stalling.started
            done, pending = await asyncio.wait(pulls, timeout=10)
            stalling.release.set()
            for task in pending:
                task.cancel()
    print(f"threads and fds before {before}, with 16 stalled pulls {during}; "
          f"{reached} reached the upstream", file=sys.stderr)
    assert reached <= 4, f"{reached} blob transfers from one upstream at once"
    refused = [task.result() for task in done if task.result()[0] != 200]
    assert len(refused) >= 12, refused
    for status, retry_after, body in refused:
        assert status == 503 and retry_after is not None, (status, retry_after, body)
        assert _oci_error(status, body)["code"] == "UNAVAILABLE"


async def test_sync_parallel_below_one_is_refused_at_once(upstream: EmulatorProcess,
                                                          tmp_path: Path) -> None:
    """``--parallel 0`` would copy nothing and never end: refused with the reason, as are
    negative and non-numeric counts and ``--last 0``."""
    from tests.integration.mirror.test_sync import sync_config

    config = str(sync_config(upstream, tmp_path))
    for option in (["--parallel", "0"], ["--parallel", "-3"], ["--parallel", "x"],
                   ["--last", "0"]):
        sync = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "sync", "--config", config,
            "http://127.0.0.1:9/library/app", "synced/app", *option,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            _out, err = await asyncio.wait_for(sync.communicate(), 30)
        except TimeoutError:
            sync.kill()
            await sync.wait()
            raise AssertionError(f"sync {option} never ended") from None
        assert sync.returncode == 2, (option, err.decode())
        assert "at least 1" in err.decode(), (option, err.decode())


async def test_attacker_stalling_manifests_never_starve_another_upstream(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """One upstream holds every manifest request without answering; clients ask it for 120
    made-up tags at once. Another mirror's upstream, healthy, is still answered at once: the
    stalled requests hold no more than their upstream's share of the gateway's connections,
    not all of the pool every upstream draws from."""
    release = asyncio.Event()
    stalled = [0]

    async def stalling(request: web.Request) -> web.StreamResponse:
        stalled[0] += 1
        await release.wait()
        return web.Response(status=503)

    healthy = _Moving()
    async with Server(stalling) as hostile, Server(healthy) as other:
        config = {"mirrors": {
            "docker.io": {"repository_prefix": "docker-hub", "upstream": {"url": hostile.url}},
            "ghcr.io": {"repository_prefix": "ghcr", "upstream": {"url": other.url}}}}
        with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
            # The flood's connections are its own: none of them delays the other pull here.
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0)) as flood:
                async def pull(tag: str) -> int:
                    async with flood.get(f"{gw.url}/v2/library/app/manifests/{tag}",
                                         params=NS) as r:
                        await r.read()
                        return r.status

                pulls = [asyncio.create_task(pull(f"t{i}")) for i in range(120)]
                await asyncio.sleep(3)
                reached = stalled[0]
                started = time.monotonic()
                async with session.get(f"{gw.url}/v2/{healthy.name}/manifests/latest",
                                       params={"ns": "ghcr.io"}) as r:
                    status, body = r.status, await r.read()
                took = time.monotonic() - started
                release.set()
                await asyncio.gather(*pulls, return_exceptions=True)
    print(f"{reached} stalled manifest requests upstream; the other upstream answered in "
          f"{took:.1f} s", file=sys.stderr)
    assert status == 200 and body == healthy.manifest, (status, body[:200])
    assert took < 2, took
    assert reached <= 32, reached


async def test_attacker_flood_past_the_waiting_transfers_is_refused_at_once(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """Blob transfers stall with headers and then nothing, 4 at most in flight: of 24 more
    pulls, 4 wait for a turn and the others are refused at once with a 503 and Retry-After,
    rather than each holding its socket and a task through the wait."""
    stalling = _StalledBlobs()
    async with Server(stalling) as hostile:
        with GatewayProcess(tmp_path / "gw", _bounded_mirror(hostile.url),
                            upstream_url=upstream.url) as gw:
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0)) as flood:
                def pull(i: int) -> Coroutine[Any, Any, tuple[int, str | None, bytes]]:
                    return _pull_blob(flood, gw.url, "sha256:" + f"{i:x}".rjust(64, "b"))

                holding = [asyncio.create_task(pull(i)) for i in range(4)]
                await asyncio.sleep(1.5)  # the 4 transfers are in flight
                started = time.monotonic()
                more = [asyncio.create_task(pull(i)) for i in range(4, 28)]
                done, _ = await asyncio.wait(more, timeout=2.5)
                took = time.monotonic() - started
                stalling.release.set()
                for task in [*holding, *more]:
                    task.cancel()
                await asyncio.gather(*holding, *more, return_exceptions=True)
    print(f"{len(done)} of 24 pulls answered within {took:.1f} s", file=sys.stderr)
    assert len(done) >= 20, f"only {len(done)} of 24 pulls refused within {took:.1f} s"
    for task in done:
        status, retry_after, body = task.result()
        assert status == 503 and retry_after is not None, (status, retry_after, body)
        assert _oci_error(status, body)["code"] == "UNAVAILABLE"
