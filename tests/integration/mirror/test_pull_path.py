"""The pull path's upstream cost: caches, single-flight, and what a cold, a warm and 50
concurrent pulls cost in ECR calls (counted from the emulator's own request log)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.mirror.conftest import StartGateway
from tests.integration.mirror.helpers import (
    check_pulled,
    downloads,
    ecr_calls,
    get,
    pull,
    push_image,
)
from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess

N_LAYERS = 3
MIRRORS: dict[str, dict[str, Any]] = {"registry.example.com": {}}


@pytest.fixture(scope="module")
def redirect_gw(start_gateway: StartGateway) -> GatewayProcess:
    return start_gateway({"mirrors": MIRRORS, "cache": {"tag_ttl_seconds": 60}})


@pytest.fixture(scope="module")
def proxy_gw(start_gateway: StartGateway, tmp_path_factory: pytest.TempPathFactory
             ) -> GatewayProcess:
    cache = tmp_path_factory.mktemp("blob-cache")
    return start_gateway({"mirrors": MIRRORS, "cache": {"tag_ttl_seconds": 60},
                          "blobs": {"mode": "proxy", "cache": {"path": str(cache)}}})


def _name() -> str:
    return f"pull/{uuid.uuid4().hex[:10]}"


async def _pull_counted(upstream: EmulatorProcess, gw: GatewayProcess, name: str,
                        ns: str | None = "registry.example.com") -> Counter[str]:
    upstream.clear_requests()
    async with aiohttp.ClientSession() as session:
        await pull(session, gw.url, name, "v1", ns)
    return ecr_calls(upstream, name)


@pytest.mark.parametrize("mode", ["redirect", "proxy"])
async def test_cold_then_warm_pull(mode: str, gateway: GatewayProcess, upstream: EmulatorProcess,
                                   redirect_gw: GatewayProcess, proxy_gw: GatewayProcess) -> None:
    """Cold: one BatchGetImage (HEAD by tag; the GET by digest hits the manifest cache) and
    one GetDownloadUrlForLayer per blob, at most N+3 calls. Warm, within the tag TTL: no
    ECR call at all (redirect: URLs and manifests cached; proxy: blobs from the local
    cache, not even a download from the storage URL)."""
    gw = redirect_gw if mode == "redirect" else proxy_gw
    name = _name()
    image = await push_image(gateway.url, name, layer_sizes=(150_000,) * N_LAYERS)
    upstream.clear_requests()
    async with aiohttp.ClientSession() as session:
        check_pulled(await pull(session, gw.url, name, "v1", "registry.example.com"), image)
    cold = ecr_calls(upstream, name)
    assert sum(cold.values()) <= N_LAYERS + 3, cold
    assert cold["BatchGetImage"] == 1, cold
    assert len(downloads(upstream)) == N_LAYERS + 1  # each blob read once from storage

    upstream.clear_requests()
    async with aiohttp.ClientSession() as session:
        check_pulled(await pull(session, gw.url, name, "v1", "registry.example.com"), image)
    warm = ecr_calls(upstream, name)
    assert warm["BatchGetImage"] == 0, warm
    assert sum(warm.values()) == 0, warm
    if mode == "proxy":
        assert downloads(upstream) == []


@pytest.mark.parametrize("mode", ["redirect", "proxy"])
async def test_50_concurrent_cold_pulls_cost_one(
        mode: str, gateway: GatewayProcess, upstream: EmulatorProcess,
        redirect_gw: GatewayProcess, proxy_gw: GatewayProcess) -> None:
    """50 pulls of the same cold image at once make exactly the ECR calls one makes."""
    gw = redirect_gw if mode == "redirect" else proxy_gw
    single, crowd = _name(), _name()
    await push_image(gateway.url, single, layer_sizes=(100_000,) * N_LAYERS)
    image = await push_image(gateway.url, crowd, layer_sizes=(100_000,) * N_LAYERS)
    one = await _pull_counted(upstream, gw, single)
    shared_before = await _shared_calls(gw)

    upstream.clear_requests()
    # The first lookup answered slowly: the others arrive while it is in flight even when
    # a busy machine spreads the 50 requests out (else the first could finish before the
    # last arrives, and the rest are warm hits that prove nothing).
    upstream.control("POST", "faults", {"action": "BatchGetImage", "latency": 1.0, "count": 1})
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            pulls = await asyncio.gather(*(pull(session, gw.url, crowd, "v1",
                                                "registry.example.com") for _ in range(50)))
    finally:
        upstream.clear_faults()
    for pulled in pulls:
        check_pulled(pulled, image)
    assert ecr_calls(upstream, crowd) == one, (ecr_calls(upstream, crowd), one)
    # The misses did arrive together and were collapsed (not merely served by a warm cache).
    assert await _shared_calls(gw) > shared_before


async def _shared_calls(gw: GatewayProcess) -> float:
    async with aiohttp.ClientSession() as session:
        _, _, body = await get(session, f"{gw.url}/metrics")
    found = re.findall(r"^ecr_gateway_singleflight_shared_total\{[^}]*\} (\S+)$",
                       body.decode(), re.MULTILINE)
    return sum(float(v) for v in found)


async def test_tag_ttl_bounds_staleness(gateway: GatewayProcess, upstream: EmulatorProcess,
                                        start_gateway: StartGateway) -> None:
    """A tag moved behind the gateway's back (straight in ECR) is seen once the tag TTL has
    passed; a push through the gateway is seen at once; TTL 0 asks ECR on every read."""
    short = start_gateway({"cache": {"tag_ttl_seconds": 1}})
    uncached = start_gateway({"cache": {"tag_ttl_seconds": 0}})
    name = _name()
    first = await push_image(gateway.url, name)
    second = await push_image(gateway.url, name, tag="v2")
    async with aiohttp.ClientSession() as session:
        async def tag_digest(gw: GatewayProcess) -> str:
            async with session.head(f"{gw.url}/v2/{name}/manifests/v1") as r:
                assert r.status == 200
                return r.headers["Docker-Content-Digest"]

        assert await tag_digest(short) == first.digest
        async with ecr_client(upstream.url) as ecr:
            await ecr.put_image(repositoryName=name, imageTag="v1",
                                imageManifest=second.manifest.decode(),
                                imageManifestMediaType="application/vnd.oci.image.manifest.v1+json")
        assert await tag_digest(short) == first.digest  # within the TTL
        await asyncio.sleep(1.2)
        assert await tag_digest(short) == second.digest

        upstream.clear_requests()
        for _ in range(3):
            assert await tag_digest(uncached) == second.digest
        assert ecr_calls(upstream, name)["BatchGetImage"] == 3

        # Through the gateway itself: the new tag is served at once, within the TTL.
        third = await push_image(short.url, name)
        assert await tag_digest(short) == third.digest
        async with session.delete(f"{short.url}/v2/{name}/manifests/{third.digest}") as r:
            assert r.status == 202
        async with session.head(f"{short.url}/v2/{name}/manifests/{third.digest}") as r:
            assert r.status == 404


async def test_head_manifest_headers(gateway: GatewayProcess, redirect_gw: GatewayProcess) -> None:
    """HEAD answers carry the digest and the length of what GET would send, from cache too."""
    name = _name()
    image = await push_image(gateway.url, name)
    async with aiohttp.ClientSession() as session:
        for reference in ("v1", image.digest, "v1"):
            async with session.head(f"{redirect_gw.url}/v2/{name}/manifests/{reference}"
                                    "?ns=registry.example.com") as r:
                assert r.status == 200
                assert r.headers["Docker-Content-Digest"] == image.digest
                assert r.headers["Content-Length"] == str(len(image.manifest))
                assert await r.read() == b""


async def test_download_urls_are_reused_within_their_lifetime(
        tmp_path: Path) -> None:
    """With presigned URLs valid for 2 s, a redirect hands out the cached URL only within
    half of that, then a new one; in proxy mode an expired URL's 403 fetches a fresh one."""
    with EmulatorProcess(tmp_path / "ecr", env={"ECR_EMULATOR_DOWNLOAD_URL_EXPIRES": "2"}) \
            as emulator, \
            GatewayProcess(tmp_path / "gw", {}, upstream_url=emulator.url) as gw, \
            GatewayProcess(tmp_path / "px", {"blobs": {"mode": "proxy"},
                                             "cache": {"download_url_ttl_seconds": 60}},
                           upstream_url=emulator.url) as px:
        name = _name()
        image = await push_image(gw.url, name)
        digest = next(iter(image.blobs))
        url = f"{gw.url}/v2/{name}/blobs/{digest}"
        async with aiohttp.ClientSession() as session:
            status, first, _ = await get(session, url, allow_redirects=False)
            status2, again, _ = await get(session, url, allow_redirects=False)
            assert status == status2 == 307 and first["Location"] == again["Location"]
            await asyncio.sleep(1.1)
            _, later, _ = await get(session, url, allow_redirects=False)
            assert later["Location"] != first["Location"]

            # proxy: URL cached for 60 s by config, yet the URL itself dies after 2 s.
            proxied = f"{px.url}/v2/{name}/blobs/{digest}"
            assert (await get(session, proxied))[2] == image.blobs[digest]
            await asyncio.sleep(2.2)
            emulator.clear_requests()
            status, _, body = await get(session, proxied)
            assert status == 200 and body == image.blobs[digest]
            assert [e["status"] for e in emulator.requests("LayerDownload")] == [200]
            assert ecr_calls(emulator)["GetDownloadUrlForLayer"] == 1


async def test_metrics_count_cache_events_and_upstream_calls(
        gateway: GatewayProcess, proxy_gw: GatewayProcess) -> None:
    name = _name()
    await push_image(gateway.url, name)
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            await pull(session, proxy_gw.url, name, "v1", "registry.example.com")
        status, headers, body = await get(session, f"{proxy_gw.url}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()

    def value(metric: str, **labels: str) -> float:
        inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
        match = re.search(rf"^{metric}{{{inner}}} (\S+)$", text, re.MULTILINE)
        assert match, (metric, labels)
        return float(match[1])

    assert value("ecr_gateway_upstream_calls_total", action="BatchGetImage") >= 1
    assert value("ecr_gateway_upstream_calls_total", action="GetDownloadUrlForLayer") >= 4
    assert value("ecr_gateway_cache_events_total", cache="tag", event="hit") >= 1
    assert value("ecr_gateway_cache_events_total", cache="manifest", event="hit") >= 2
    assert value("ecr_gateway_cache_events_total", cache="blob", event="fill") >= 4
    assert value("ecr_gateway_cache_events_total", cache="blob", event="hit") >= 4
