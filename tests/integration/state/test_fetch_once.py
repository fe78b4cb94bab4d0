"""One fetch per blob across replicas: concurrent first reads of one blob on different
replicas (sharing one Redis) cost one read from storage, or from the upstream registry of a
pull-through mirror. Real processes: an emulator, three gateway replicas, redis-server and,
for pull-through, a real distribution registry as the upstream."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from bench.services import ReferenceRegistry
from tests.integration.mirror.helpers import downloads, ecr_calls, push_image, sha256
from tests.integration.mirror.test_pull_through import (
    _hub_reads,
    _mirror_config,
    _pull,
    _push,
    _until_stored,
)
from tests.integration.state.conftest import redis_state, replica
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer

MiB = 1024 * 1024


async def _get(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as r:
        assert r.status == 200, (r.status, await r.text())
        return await r.read()


async def test_concurrent_first_reads_on_replicas_fetch_each_blob_once(
        upstream: EmulatorProcess, gateway: GatewayProcess, redis_server: RedisServer,
        tmp_path: Path) -> None:
    image = await push_image(gateway.url, f"once/{uuid.uuid4().hex[:10]}",
                             layer_sizes=(6 * MiB + 3, 2 * MiB, 700_000))
    state = redis_state(redis_server)
    with contextlib.ExitStack() as stack:
        replicas = [stack.enter_context(replica(
            tmp_path / label, upstream, state,
            blobs={"mode": "proxy", "cache": {"path": str(tmp_path / label / "cache")}}))
            for label in "abc"]
        upstream.clear_requests()
        reads = [(gw, layer) for layer in image.layers for gw in replicas for _ in range(3)]
        async with aiohttp.ClientSession() as session:
            bodies = await asyncio.gather(*(
                _get(session, f"{gw.url}/v2/{image.name}/blobs/{sha256(layer)}")
                for gw, layer in reads))
            assert all(body == layer for body, (_, layer) in zip(bodies, reads, strict=True))
            fetched = Counter(d["digest"] for d in downloads(upstream))
            assert fetched == Counter(sha256(layer) for layer in image.layers), fetched
            # Each replica asks once whether storage serves the blob to its caller (a
            # download URL, which the fetching replica then reads): nothing more.
            calls = ecr_calls(upstream, image.name)
            assert calls["GetDownloadUrlForLayer"] == len(replicas) * len(image.layers)
            assert calls["BatchCheckLayerAvailability"] == 0
            shared = 0.0
            for gw in replicas:
                async with session.get(f"{gw.url}/metrics") as r:
                    for line in (await r.text()).splitlines():
                        if line.startswith('ecr_gateway_singleflight_shared_total{kind="'
                                           'replica_fill"}'):
                            shared += float(line.split()[-1])
            assert shared == 2 * len(image.layers)  # the two replicas that did not fetch
            # Every replica now holds each blob: later reads cost nothing upstream.
            upstream.clear_requests()
            for gw, layer in itertools.product(replicas, image.layers):
                assert await _get(session, f"{gw.url}/v2/{image.name}/blobs/"
                                           f"{sha256(layer)}") == layer
            assert downloads(upstream) == []


async def test_a_filler_that_dies_frees_the_blob_for_the_others(
        upstream: EmulatorProcess, gateway: GatewayProcess, redis_server: RedisServer,
        tmp_path: Path) -> None:
    """The fill lock of a replica killed mid-fill expires after its TTL (its last renewal's):
    the replica waiting for it then fetches the blob itself."""
    image = await push_image(gateway.url, f"once/{uuid.uuid4().hex[:10]}",
                             layer_sizes=(3 * MiB,))
    layer = image.layers[0]
    state = redis_state(redis_server)
    lock = f"{state['key_prefix']}fill:{{{sha256(layer)}}}"
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        with replica(tmp_path / "a", upstream, state,
                     blobs={"mode": "proxy", "cache": {"path": str(tmp_path / "cache")}}) as a:
            async with aiohttp.ClientSession() as session:
                await raw.set(lock, "a replica that died", px=2000)  # as it would be left
                started = time.monotonic()
                assert await _get(session, f"{a.url}/v2/{image.name}/blobs/"
                                           f"{sha256(layer)}") == layer
                assert time.monotonic() - started >= 1.5
        assert any("being filled by another replica" in line for line in a.log_lines)
        assert [d["digest"] for d in downloads(upstream)
                if d["digest"] == sha256(layer)] == [sha256(layer)]
    finally:
        await raw.aclose()


def _pulling_through(stack: contextlib.ExitStack, labels: str, root: Path,
                     upstream: EmulatorProcess, redis_server: RedisServer,
                     hub: ReferenceRegistry, cached: bool = False) -> list[GatewayProcess]:
    """Replicas sharing one Redis whose docker.io mirror pulls through from ``hub``; with
    ``cached``, in proxy mode with a blob cache each."""
    state = redis_state(redis_server)
    return [stack.enter_context(replica(
        root / label, upstream, state, **_mirror_config(hub.url),
        **({"blobs": {"mode": "proxy", "cache": {"path": str(root / label / "c")}}}
           if cached else {})))
        for label in labels]


async def test_pull_through_on_replicas_reads_each_upstream_blob_once(
        upstream: EmulatorProcess, redis_server: RedisServer, tmp_path: Path) -> None:
    hub = ReferenceRegistry(tmp_path / "hub").start()
    try:
        async with aiohttp.ClientSession() as http:
            name = f"library/once-{uuid.uuid4().hex[:8]}"
            _digest, manifest, layers = await _push(http, hub.url, name, "v1",
                                                    sizes=(4 * MiB, 300_000))
            with contextlib.ExitStack() as stack:
                replicas = _pulling_through(stack, "abc", tmp_path, upstream, redis_server,
                                            hub)
                pulls = await asyncio.gather(*(_pull(http, gw.url, name, "v1")
                                               for gw in replicas for _ in range(2)))
        for body, blobs in pulls:
            assert body == manifest and blobs[1:] == layers
        for layer in layers:
            assert _hub_reads(hub, sha256(layer)) == 1
    finally:
        hub.stop()


async def test_a_blob_one_replica_filled_is_streamed_from_it_by_the_others(
        upstream: EmulatorProcess, redis_server: RedisServer, tmp_path: Path) -> None:
    """Replicas in proxy mode with blob caches: the replica whose pull-through filled ECR
    keeps the blobs in its cache and says so in Redis, and another replica's first pull
    streams them from it: nothing is downloaded from ECR, nor read from the upstream again."""
    hub = ReferenceRegistry(tmp_path / "hub").start()
    try:
        async with aiohttp.ClientSession() as http:
            name = f"library/held-{uuid.uuid4().hex[:8]}"
            digest, manifest, layers = await _push(http, hub.url, name, "v1",
                                                   sizes=(3 * MiB, 200_000))
            with contextlib.ExitStack() as stack:
                a, b = _pulling_through(stack, "ab", tmp_path, upstream, redis_server, hub,
                                        cached=True)
                body, blobs = await _pull(http, a.url, name, "v1")
                assert body == manifest and blobs[1:] == layers
                await _until_stored(a, f"docker.io/{name}:v1: stored in ECR as {digest}")
                upstream.clear_requests()
                body, blobs = await _pull(http, b.url, name, "v1")
                assert body == manifest and blobs[1:] == layers
                assert downloads(upstream) == []
                held = {path.name for path in (tmp_path / "b" / "c" / "sha256").iterdir()}
                assert {sha256(blob).partition(":")[2] for blob in blobs} <= held
        for blob in blobs:
            assert _hub_reads(hub, sha256(blob)) == 1
    finally:
        hub.stop()
