"""Cold pulls as an attacker uses them: any caller allowed to pull from a mirror can ask for
images ECR does not hold, and each cold blob is spooled to the gateway's disk while it is
copied into ECR. The spools in flight never take more than
``blobs.staging.pullthrough_max_bytes``: a blob that does not fit is refused with a 503 and
Retry-After before the upstream is asked for it, and a blob of unknown size is cut off
where the budget ends. Nor does a cold pull of a name the upstream does not hold create an
ECR repository. An upstream that dribbles a blob (a byte just inside each read timeout) is
cut off once it falls below the minimum average rate, and its spool's share is given back;
one that is slow but keeps above the rate is copied whole.

The upstream is a small server in this process that can hold a layer's transfer open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.hostile import Handler, Server
from tests.support.processes import peak_rss

MiB = 1024 * 1024
BUDGET = 64 * MiB
NS = {"ns": "docker.io"}
CONFIG_BLOB = b'{"architecture":"amd64","os":"linux"}'


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Upstream:
    """Two images (``a`` and ``b`` unless ``names`` says otherwise), each with one 40 MiB
    layer; the first one's layer stops after its first MiB until ``release`` is set, or
    with ``drip`` sends one byte every 0.3 s (inside any read timeout) for a minute,
    ``dripped_off`` set once the gateway closed that connection. Every endless blob is sent
    without a length."""

    def __init__(self, names: str = "ab", drip: bool = False) -> None:
        self.layers = {name: bytes([ord(name)]) * 40 * MiB for name in names}
        self.held = names[0]
        self.release = asyncio.Event()
        self.endless = _digest(b"a layer nobody has")
        self.endless_sent = 0
        self.drip = drip
        self.dripped_off = asyncio.Event()

    def manifest(self, name: str) -> bytes:
        return json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": _digest(CONFIG_BLOB), "size": len(CONFIG_BLOB)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": _digest(self.layers[name]),
                        "size": len(self.layers[name])}]}).encode()

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        match = re.fullmatch(r"/v2/library/(\w)/manifests/v1", request.path)
        if match:
            return web.Response(body=self.manifest(match[1]),
                                content_type="application/vnd.oci.image.manifest.v1+json")
        if request.path.endswith(self.endless):
            response = web.StreamResponse()
            await response.prepare(request)
            try:
                while self.endless_sent < 256 * MiB:
                    await response.write(b"\0" * MiB)
                    self.endless_sent += MiB
            except ConnectionResetError:
                pass
            return response
        for name, layer in self.layers.items():
            if request.path.endswith(_digest(layer)):
                response = web.StreamResponse(headers={"Content-Length": str(len(layer))})
                await response.prepare(request)
                if name == self.held and self.drip:
                    return await self._dripped(response, layer)
                await response.write(layer[:MiB])
                if name == self.held:
                    await self.release.wait()
                await response.write(layer[MiB:])
                return response
        return web.Response(body=CONFIG_BLOB)

    async def _dripped(self, response: web.StreamResponse, layer: bytes) -> web.StreamResponse:
        try:
            for byte in layer[:200]:
                await response.write(bytes([byte]))
                await asyncio.sleep(0.3)
        except ConnectionError:
            self.dripped_off.set()
        return response


def _config(url: str, **settings: object) -> dict[str, object]:
    return {"mirrors": {"docker.io": {"repository_prefix": "docker-hub",
                                      "upstream": {"url": url, **settings}}},
            "blobs": {"staging": {"pullthrough_max_bytes": BUDGET}}}


@contextlib.asynccontextmanager
async def _gateway(handler: Handler, upstream: EmulatorProcess, tmp_path: Path,
                   **settings: object) -> AsyncIterator[tuple[Server, GatewayProcess]]:
    """A gateway whose docker.io mirror pulls through ``handler``, with a 64 MiB spool."""
    async with Server(handler) as source:
        with GatewayProcess(tmp_path / "gw", _config(source.url, **settings),
                            upstream_url=upstream.url) as gw:
            yield source, gw


async def _spool_bytes(session: aiohttp.ClientSession, gw: GatewayProcess) -> float:
    async with session.get(f"{gw.url}/metrics") as r:
        text = await r.text()
    match = re.search(r"^ecr_gateway_pullthrough_spool_bytes (\S+)$", text, re.M)
    assert match, "no spool gauge in /metrics"
    return float(match[1])


async def test_cold_pulls_beyond_the_spool_budget_are_refused_before_the_upstream_is_asked(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    source = _Upstream()
    async with _gateway(source, upstream, tmp_path) as (hostile, gw):
        async with session.get(f"{gw.url}/v2/library/a/manifests/v1", params=NS) as r:
            assert r.status == 200, await r.text()
        layer_a, layer_b = (_digest(source.layers[n]) for n in "ab")
        for _ in range(200):  # a's layer is being copied (and held open upstream)
            if any(path.endswith(layer_a) for path, _ in hostile.seen):
                break
            await asyncio.sleep(0.05)
        assert await _spool_bytes(session, gw) >= 40 * MiB

        async with session.get(f"{gw.url}/v2/library/b/manifests/v1", params=NS) as r:
            assert r.status == 200, await r.text()
        async with session.get(f"{gw.url}/v2/library/b/blobs/{layer_b}", params=NS) as r:
            body = await r.read()
            assert r.status == 503, (r.status, body[:300])
            assert r.headers.get("Retry-After") == "10"
            (error,) = json.loads(body)["errors"]
            assert error["code"] == "UNAVAILABLE"
            assert error["detail"]["spool_max_bytes"] == BUDGET
        assert not any(path.endswith(layer_b) for path, _ in hostile.seen), \
            "the upstream was asked for a blob the spool had no room for"
        assert await _spool_bytes(session, gw) <= BUDGET

        source.release.set()  # a's copy ends and gives its share back
        for _ in range(400):
            if await _spool_bytes(session, gw) == 0:
                break
            await asyncio.sleep(0.05)
        async with session.get(f"{gw.url}/v2/library/b/blobs/{layer_b}", params=NS) as r:
            assert r.status == 200, await r.text()
            assert await r.read() == source.layers["b"]


async def test_a_blob_of_unknown_size_is_cut_off_where_the_budget_ends(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    source = _Upstream()
    async with _gateway(source, upstream, tmp_path) as (_, gw):
        # Asked for by digest with no manifest before it: neither the gateway nor the
        # upstream's answer (chunked) says how large it is.
        async with session.get(f"{gw.url}/v2/library/a/blobs/{source.endless}",
                               params=NS) as r:
            with_body = r.status
            try:
                await r.read()
            except aiohttp.ClientPayloadError:
                pass  # the transfer broke off: what a client must see
        assert with_body in (200, 503)
        for _ in range(200):
            if await _spool_bytes(session, gw) == 0:
                break
            await asyncio.sleep(0.05)
        assert await _spool_bytes(session, gw) == 0
    assert source.endless_sent < BUDGET + 32 * MiB, \
        f"the gateway read {source.endless_sent // MiB} MiB of a blob of unknown size"


# A floor the tests reach in seconds: one second's grace, then 64 KiB a second on average.
FLOOR = {"timeout_seconds": 2, "blob_grace_seconds": 1, "blob_min_rate": 64 * 1024}


async def _event_count(session: aiohttp.ClientSession, gw: GatewayProcess, event: str) -> float:
    async with session.get(f"{gw.url}/metrics") as r:
        text = await r.text()
    return sum(float(m[1]) for m in re.finditer(
        rf'^ecr_gateway_pullthrough_events_total{{[^}}]*event="{event}"[^}}]*}} (\S+)$',
        text, re.M))


async def test_a_dribbled_blob_is_cut_off_below_the_minimum_rate_and_frees_its_spool(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """A byte every 0.3 s never lets the 2-second read timeout fire: without a floor the
    fill, its 40 MiB of the 64 MiB spool budget and the client following it would wait a
    minute (as long as the upstream cares to), and ``b`` could not be pulled meanwhile."""
    source = _Upstream("cd", drip=True)  # not the images other tests put into ECR
    layer_c, layer_d = (_digest(source.layers[n]) for n in "cd")
    async with _gateway(source, upstream, tmp_path, **FLOOR) as (_, gw):
        async with session.get(f"{gw.url}/v2/library/c/manifests/v1", params=NS) as r:
            assert r.status == 200, await r.text()
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(20):
            async with session.get(f"{gw.url}/v2/library/c/blobs/{layer_c}",
                                   params=NS) as r:
                status = r.status
                try:
                    body, whole = await r.read(), True
                except aiohttp.ClientPayloadError:
                    body, whole = b"", False  # streamed as it came, then cut off
        took = loop.time() - started
        if status == 200:
            assert not whole, "a dribbled blob was served whole"
        else:  # cut off before its first byte reached the client
            assert status == 503, (status, body[:300])
            assert json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"
        assert took < 8, f"the client waited {took:.1f} s for a dribbled blob"
        # The gateway closed the upstream's connection (not kept for the next request).
        await asyncio.wait_for(source.dripped_off.wait(), 5)
        for _ in range(100):
            if await _spool_bytes(session, gw) == 0:
                break
            await asyncio.sleep(0.05)
        assert await _spool_bytes(session, gw) == 0
        assert await _event_count(session, gw, "too_slow") == 1
        assert await gw.logged("slower than 65536 bytes a second after 1 seconds")

        # The budget is free again: another cold image of 40 MiB is pulled whole.
        async with session.get(f"{gw.url}/v2/library/d/manifests/v1", params=NS) as r:
            assert r.status == 200, await r.text()
        async with session.get(f"{gw.url}/v2/library/d/blobs/{layer_d}", params=NS) as r:
            assert r.status == 200, await r.text()
            assert await r.read() == source.layers["d"]
    # Nothing of the dribbled layer went into ECR.
    assert not [e for e in upstream.requests("CompleteLayerUpload")
                if layer_c in json.dumps(e)]
    async with ecr_client(upstream.url) as ecr:
        with contextlib.suppress(ecr.exceptions.RepositoryNotFoundException):
            found = await ecr.describe_images(repositoryName="docker-hub/library/c")
            assert found["imageDetails"] == []


class _Steady:
    """One image whose 6 MiB layer is sent at about 1 MiB a second in 64 KiB pieces, with a
    1.5-second pause half-way (shorter than the read timeout): slow, and nothing at all for
    a while, but above the floor on average."""

    def __init__(self) -> None:
        self.layer = os.urandom(6 * MiB)
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": _digest(CONFIG_BLOB), "size": len(CONFIG_BLOB)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": _digest(self.layer), "size": len(self.layer)}]}).encode()

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if "/manifests/" in request.path:
            return web.Response(body=self.manifest,
                                content_type="application/vnd.oci.image.manifest.v1+json")
        if not request.path.endswith(_digest(self.layer)):
            return web.Response(body=CONFIG_BLOB)
        response = web.StreamResponse(headers={"Content-Length": str(len(self.layer))})
        await response.prepare(request)
        piece = 64 * 1024
        for offset in range(0, len(self.layer), piece):
            await response.write(self.layer[offset:offset + piece])
            await asyncio.sleep(1.5 if offset + piece == len(self.layer) // 2 else 1 / 16)
        return response


async def test_a_slow_upstream_above_the_minimum_rate_is_copied_whole(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    source = _Steady()
    layer = _digest(source.layer)
    # A floor of 256 KiB a second: the pause alone is below it, the average is not.
    settings = {**FLOOR, "blob_min_rate": 256 * 1024}
    async with _gateway(source, upstream, tmp_path, **settings) as (_, gw):
        async with session.get(f"{gw.url}/v2/library/steady/manifests/v1", params=NS) as r:
            assert r.status == 200, await r.text()
        async with asyncio.timeout(60):
            async with session.get(f"{gw.url}/v2/library/steady/blobs/{layer}",
                                   params=NS) as r:
                assert r.status == 200, await r.text()
                assert await r.read() == source.layer
            for _ in range(400):  # the fill puts the image into ECR
                async with ecr_client(upstream.url) as ecr:
                    with contextlib.suppress(ecr.exceptions.RepositoryNotFoundException):
                        found = await ecr.describe_images(
                            repositoryName="docker-hub/library/steady")
                        if found["imageDetails"]:
                            break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the slow upstream's image never reached ECR")
        assert await _event_count(session, gw, "too_slow") == 0


async def _not_held(request: web.Request) -> web.StreamResponse:
    return web.json_response({"errors": [{"code": "BLOB_UNKNOWN", "message": "no"}]},
                             status=404)


async def _error_page(request: web.Request) -> web.StreamResponse:
    """A proxy or portal in front of the upstream: 200 with a page of its own."""
    return web.Response(body=b"<html><body>Sign in to continue</body></html>",
                        content_type="text/html")


@pytest.mark.parametrize("answer", [_not_held, _error_page])
async def test_names_the_upstream_does_not_hold_create_no_ecr_repository(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path,
        answer: Handler) -> None:
    """ECR's repositories are a quota of the whole account (10,000 by default): a caller
    asking for blobs under made-up names must not create one per name, whether the upstream
    says it has no such blob or answers with bytes that are not the blob."""
    async with _gateway(answer, upstream, tmp_path) as (_, gw):
        for index in range(3):
            async with session.get(f"{gw.url}/v2/made-up/name{index}/blobs/"
                                   f"{_digest(b'x%d' % index)}", params=NS) as r:
                try:
                    body, whole = await r.read(), True
                except aiohttp.ClientPayloadError:  # streamed as it came, then broken off
                    body, whole = b"", False
            if answer is _not_held:
                assert r.status == 404, (r.status, body[:300])
                assert json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"
            else:
                assert not (r.status == 200 and whole), "the page was served as the blob"
        await asyncio.sleep(1)  # the copies that failed are over
    async with ecr_client(upstream.url) as ecr:
        found = await ecr.describe_repositories()
    names = [repository["repositoryName"] for repository in found["repositories"]]
    assert not [name for name in names if "made-up" in name], names



async def test_many_large_manifests_waiting_on_one_slow_blob_stay_within_memory(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """Every tag the caller names is a manifest of almost 4 MiB (annotations) whose one layer
    the upstream sends at just above the minimum rate: each copy into ECR waits on that blob
    for hours. 120 such tags are all served, while the manifests held for their copies stay
    within 64 MiB (kept, each took 8 MiB of the gateway's memory: a thousand tags, 8 GiB)."""
    slow_layer = _digest(b"a layer sent slowly")
    layer_size = 1024 * MiB

    def manifest(tag: str) -> bytes:
        return json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": _digest(CONFIG_BLOB), "size": len(CONFIG_BLOB)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": slow_layer, "size": layer_size}],
            "annotations": {"padding": tag + "x" * (4 * MiB - 4096)}}).encode()

    async def slow(request: web.Request) -> web.StreamResponse:
        if "/manifests/" in request.path:
            return web.Response(body=manifest(request.path.rsplit("/", 1)[-1]),
                                content_type="application/vnd.oci.image.manifest.v1+json")
        if request.path.endswith(_digest(CONFIG_BLOB)):
            return web.Response(body=CONFIG_BLOB)
        response = web.StreamResponse(headers={"Content-Length": str(layer_size)})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while True:  # 100 KB a second: above the floor, ending in three hours
                await response.write(b"\0" * 100_000)
                await asyncio.sleep(1)
        return response

    settings = {"pullthrough_max_bytes": 2 * layer_size}
    async with Server(slow) as source:
        config = _config(source.url)
        config["blobs"] = {"staging": settings}
        with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
            assert gw.process is not None
            before = peak_rss(gw.process.pid)

            async def pull(tag: str) -> int:
                async with session.get(f"{gw.url}/v2/library/big/manifests/{tag}",
                                       params=NS) as r:
                    await r.read()
                    return r.status

            for batch in range(0, 120, 10):
                statuses = await asyncio.gather(*(pull(f"t{i}")
                                                  for i in range(batch, batch + 10)))
                assert set(statuses) == {200}, statuses
            grown = peak_rss(gw.process.pid) - before
            deferred = await _event_count(session, gw, "store_deferred")
    assert grown < 400 * MiB, f"the gateway grew {grown // MiB} MiB"
    assert deferred >= 100, deferred
