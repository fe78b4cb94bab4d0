"""Replicas answer as one registry: a tag moved or an image deleted through one replica (or
directly in ECR) is not served by another from its pull caches.

Real processes: one emulator, two gateway replicas, and for the shared state one
redis-server. Without Redis a replica learns of others' changes within the caches' bounds
(``cache.manifest_revalidate_seconds``); with Redis at once (pub/sub notices)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.state.conftest import redis_state, replica
from tests.support.balancer import RoundRobin
from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.hostile import LateAnswers, Server
from tests.support.redis import RedisServer, SharedRedis

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCTET = {"Content-Type": "application/octet-stream"}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _name(tag: str) -> str:
    return f"coherence/{tag}-{os.urandom(4).hex()}"


async def upload(session: aiohttp.ClientSession, url: str, name: str, data: bytes) -> None:
    async with session.post(f"{url}/v2/{name}/blobs/uploads/") as r:
        assert r.status == 202, await r.text()
        location = r.headers["Location"]
    sep = "&" if "?" in location else "?"
    async with session.put(f"{url}{location}{sep}digest={digest_of(data)}", data=data,
                           headers=OCTET) as r:
        assert r.status == 201, await r.text()


async def push(session: aiohttp.ClientSession, url: str, name: str, tag: str) -> str:
    """A small image (its own random layer) under ``tag``; returns the manifest digest."""
    layer = os.urandom(2048)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    await upload(session, url, name, layer)
    await upload(session, url, name, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest_of(layer), "size": len(layer)}]}).encode()
    async with session.put(f"{url}/v2/{name}/manifests/{tag}", data=manifest,
                           headers={"Content-Type": OCI_MANIFEST}) as r:
        assert r.status == 201, await r.text()
    return digest_of(manifest)


async def get(session: aiohttp.ClientSession, url: str, name: str, ref: str) -> tuple[int, str]:
    """Status and the digest served (empty when not 200)."""
    async with session.get(f"{url}/v2/{name}/manifests/{ref}",
                           headers={"Accept": OCI_MANIFEST}) as r:
        body = await r.read()
        if r.status != 200:
            assert (await r.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN", body
            return r.status, ""
        assert r.headers["Docker-Content-Digest"] == digest_of(body)
        return r.status, digest_of(body)


async def delete(session: aiohttp.ClientSession, url: str, name: str, ref: str) -> None:
    async with session.delete(f"{url}/v2/{name}/manifests/{ref}") as r:
        assert r.status == 202, await r.text()


def image_reads(upstream: EmulatorProcess, name: str) -> int:
    return len([r for r in upstream.requests("BatchGetImage") if r["repository"] == name])


def two(upstream: EmulatorProcess, root: Path, state: dict[str, Any],
        cache: dict[str, float]) -> tuple[GatewayProcess, GatewayProcess]:
    return (replica(root / "a", upstream, state, cache=cache),
            replica(root / "b", upstream, state, cache=cache))


async def test_without_redis_a_deletion_is_seen_within_the_bound(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    bound = 1.0
    a, b = two(upstream, tmp_path, {"backend": "local"},
               {"manifest_revalidate_seconds": bound, "tag_ttl_seconds": bound})
    name = _name("bound")
    with a, b:
        async with aiohttp.ClientSession() as session:
            digest = await push(session, a.url, name, "v1")
            assert await get(session, b.url, name, digest) == (200, digest)
            reads = image_reads(upstream, name)
            # Warm pulls within the bound cost no upstream call.
            for _ in range(3):
                assert await get(session, b.url, name, digest) == (200, digest)
            assert image_reads(upstream, name) == reads

            await delete(session, a.url, name, digest)
            await asyncio.sleep(bound + 0.3)
            assert await get(session, b.url, name, digest) == (404, "")

            # Deleted directly in ECR (another client, a lifecycle rule): the replica that
            # pushed it and holds it in its cache stops serving it after the bound too.
            other = await push(session, a.url, name, "v2")
            assert await get(session, a.url, name, other) == (200, other)
            async with ecr_client(upstream.url) as ecr:
                answer = await ecr.batch_delete_image(repositoryName=name,
                                                      imageIds=[{"imageDigest": other}])
                assert not answer["failures"]
            await asyncio.sleep(bound + 0.3)
            assert await get(session, a.url, name, other) == (404, "")
            assert await get(session, a.url, name, "v2") == (404, "")


async def test_with_redis_tag_moves_and_deletes_are_seen_at_once(
        upstream: EmulatorProcess, redis_server: SharedRedis, tmp_path: Path) -> None:
    # Bounds far beyond the test: whatever B stops serving, a notice made it stop.
    long = {"manifest_revalidate_seconds": 600.0, "tag_ttl_seconds": 600.0}
    a, b = two(upstream, tmp_path, redis_state(redis_server), long)
    name = _name("notice")
    with a, b:
        async with aiohttp.ClientSession() as session:
            first = await push(session, a.url, name, "t")
            assert await get(session, b.url, name, "t") == (200, first)
            assert await get(session, b.url, name, first) == (200, first)

            second = await push(session, a.url, name, "t")  # the tag moves
            assert await get(session, b.url, name, "t") == (200, second)

            await delete(session, a.url, name, "t")  # untag: the image stays
            assert await get(session, b.url, name, "t") == (404, "")
            assert await get(session, b.url, name, second) == (200, second)

            await delete(session, a.url, name, first)
            assert await get(session, b.url, name, first) == (404, "")
            await delete(session, b.url, name, second)
            assert await get(session, a.url, name, second) == (404, "")


async def test_through_a_balancer_a_deleted_image_is_gone_from_every_replica(
        upstream: EmulatorProcess, redis_server: RedisServer, tmp_path: Path) -> None:
    long = {"manifest_revalidate_seconds": 600.0, "tag_ttl_seconds": 600.0}
    a, b = two(upstream, tmp_path, redis_state(redis_server), long)
    name = _name("balanced")
    with a, b, RoundRobin([a.url, b.url]) as balancer:
        async with aiohttp.ClientSession() as session:
            digest = await push(session, balancer.url, name, "v1")
            for _ in range(4):  # both replicas cache it, by tag and by digest
                assert await get(session, balancer.url, name, "v1") == (200, digest)
                assert await get(session, balancer.url, name, digest) == (200, digest)
            await delete(session, balancer.url, name, digest)
            for _ in range(4):
                assert await get(session, balancer.url, name, digest) == (404, "")
                assert await get(session, balancer.url, name, "v1") == (404, "")


async def test_a_replica_that_missed_notices_flushes_its_caches(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """Redis restarts while an image is deleted: the notice is lost, so every replica that
    listens again forgets what it cached rather than serve it for the whole bound."""
    redis = RedisServer(tmp_path / "redis").start()
    long = {"manifest_revalidate_seconds": 600.0, "tag_ttl_seconds": 600.0}
    try:
        a, b = two(upstream, tmp_path, redis_state(redis), long)
        name = _name("missed")
        with a, b:
            async with aiohttp.ClientSession() as session:
                digest = await push(session, a.url, name, "v1")
                assert await get(session, b.url, name, digest) == (200, digest)
                redis.stop()
                await delete(session, a.url, name, digest)  # the notice cannot go out
                redis.start()
                deadline = time.monotonic() + 20
                while await get(session, b.url, name, digest) != (404, ""):
                    assert time.monotonic() < deadline, "B still serves the deleted image"
                    await asyncio.sleep(0.2)
                while not any("cache notices" in line for line in b.log_lines):
                    assert time.monotonic() < deadline + 5, "B never said it flushed"
                    await asyncio.sleep(0.1)
    finally:
        redis.stop()


async def test_with_redis_tag_lists_follow_other_replicas_at_once(
        upstream: EmulatorProcess, redis_server: SharedRedis, tmp_path: Path) -> None:
    """B keeps a repository's tag list for the tag TTL; a tag pushed or deleted through A
    shows in B's list at once."""
    long = {"manifest_revalidate_seconds": 600.0, "tag_ttl_seconds": 600.0}
    a, b = two(upstream, tmp_path, redis_state(redis_server), long)
    name = _name("listed")

    async def tags(session: aiohttp.ClientSession, url: str) -> list[str]:
        async with session.get(f"{url}/v2/{name}/tags/list") as r:
            assert r.status == 200, await r.text()
            listed: list[str] = (await r.json())["tags"]
            return listed

    with a, b:
        async with aiohttp.ClientSession() as session:
            await push(session, a.url, name, "one")
            assert await tags(session, b.url) == ["one"]  # B now keeps the list
            await push(session, a.url, name, "two")
            assert await tags(session, b.url) == ["one", "two"]
            await delete(session, a.url, name, "one")
            assert await tags(session, b.url) == ["two"]



async def catalog(session: aiohttp.ClientSession, url: str) -> list[str]:
    async with session.get(f"{url}/v2/_catalog") as r:
        assert r.status == 200, await r.text()
        listed: list[str] = (await r.json())["repositories"]
        return listed


async def test_with_redis_a_repository_created_through_one_replica_is_in_every_catalog(
        upstream: EmulatorProcess, redis_server: SharedRedis, tmp_path: Path) -> None:
    """B keeps the catalog for the tag TTL; a repository a push through A creates is in B's
    catalog at once, so pages answered by different replicas list the same names."""
    long = {"manifest_revalidate_seconds": 600.0, "tag_ttl_seconds": 600.0}
    a, b = two(upstream, tmp_path, redis_state(redis_server), long)
    first, second = _name("cat-a"), _name("cat-b")
    with a, b:
        async with aiohttp.ClientSession() as session:
            await push(session, a.url, first, "v1")
            assert first in await catalog(session, b.url)  # B now keeps the catalog
            await push(session, a.url, second, "v1")  # a new repository, through A
            assert second in await catalog(session, a.url)
            assert second in await catalog(session, b.url)


async def test_a_replica_that_missed_notices_reads_its_tag_lists_again(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """A tag deleted through A while Redis is down: its notice is lost, so B, once it
    listens again, reads the repository's tag list from ECR rather than keep listing the
    tag for the whole TTL."""
    redis = RedisServer(tmp_path / "redis").start()
    long = {"manifest_revalidate_seconds": 600.0, "tag_ttl_seconds": 600.0}
    name = _name("missed-list")

    async def tags(session: aiohttp.ClientSession, url: str) -> list[str]:
        async with session.get(f"{url}/v2/{name}/tags/list") as r:
            assert r.status == 200, await r.text()
            listed: list[str] = (await r.json())["tags"]
            return listed

    try:
        a, b = two(upstream, tmp_path, redis_state(redis), long)
        with a, b:
            async with aiohttp.ClientSession() as session:
                await push(session, a.url, name, "keep")
                await push(session, a.url, name, "gone")
                assert await tags(session, b.url) == ["gone", "keep"]  # B keeps the list
                redis.stop()
                await delete(session, a.url, name, "gone")  # the notice cannot go out
                redis.start()
                deadline = time.monotonic() + 20
                while not any("subscribed again" in line for line in b.log_lines):
                    assert time.monotonic() < deadline, "B never listened again"
                    await asyncio.sleep(0.1)
                assert await tags(session, b.url) == ["keep"]
    finally:
        redis.stop()


async def image_manifest(session: aiohttp.ClientSession, url: str, name: str) -> bytes:
    """A small image's blobs uploaded; its manifest, to be put."""
    layer = os.urandom(2048)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    await upload(session, url, name, layer)
    await upload(session, url, name, config)
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest_of(layer), "size": len(layer)}]}).encode()


async def test_a_read_answered_before_another_replicas_change_is_not_kept(
        upstream: EmulatorProcess, redis_server: SharedRedis, tmp_path: Path) -> None:
    """B reads a tag (then an image) from ECR; A moves the tag (deletes the image) while
    ECR's answer is on its way to B, and answers its client once B applied the notice. B
    answers the read in flight with what ECR said, but keeps none of it: the next read
    through B sees A's change, not the old answer for the whole cache bound."""
    long = {"manifest_revalidate_seconds": 600.0, "tag_ttl_seconds": 600.0}
    name = _name("in-flight")
    late = LateAnswers(upstream.url)
    async with Server(late) as hop:
        a = replica(tmp_path / "a", upstream, redis_state(redis_server), cache=long)
        b = replica(tmp_path / "b", upstream, a.config["state"], cache=long)
        b.config["upstream"]["endpoint_url"] = hop.url
        with a, b:
            async with aiohttp.ClientSession() as session:
                first = await push(session, a.url, name, "t")
                moved = await image_manifest(session, a.url, name)

                async def while_b_reads(ref: str, change: Callable[[], Awaitable[None]]
                                        ) -> tuple[int, str]:
                    late.hold, asked = 1.5, late.answered
                    reading = asyncio.create_task(get(session, b.url, name, ref))
                    deadline = time.monotonic() + 10
                    while late.answered == asked:  # ECR answered B: the change comes after
                        assert time.monotonic() < deadline, "B did not ask ECR"
                        await asyncio.sleep(0.01)
                    await change()
                    late.hold = 0.0
                    return await reading

                async def move() -> None:
                    async with session.put(f"{a.url}/v2/{name}/manifests/t", data=moved,
                                           headers={"Content-Type": OCI_MANIFEST}) as r:
                        assert r.status == 201, await r.text()

                assert await while_b_reads("t", move) == (200, first)  # asked before
                assert await get(session, b.url, name, "t") == (200, digest_of(moved))

                async def remove() -> None:
                    await delete(session, a.url, name, first)

                assert await while_b_reads(first, remove) == (200, first)
                assert await get(session, b.url, name, first) == (404, "")
