"""Untag (``DELETE /v2/<name>/manifests/<tag>``) never leaves the image unreferenced in ECR:
whichever ECR call fails, and wherever the gateway process dies, the image stays pullable
by digest. A holder an interrupted untag left behind does not block deleting the image."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.reliability.helpers import faults_admin
from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient

# Errors are answered at once, not retried for seconds; no circuit breaker in the way.
SETTINGS = {"upstream": {"retry_budget_seconds": 0.5, "breaker_failures": 0}}


@pytest.fixture(autouse=True)
def no_faults(upstream: EmulatorProcess) -> Iterator[None]:
    faults_admin(upstream, "DELETE")
    yield
    faults_admin(upstream, "DELETE")


async def ecr_has(upstream: EmulatorProcess, name: str, **image_id: str) -> bool:
    async with ecr_client(upstream.url) as ecr:
        answer = await ecr.batch_get_image(repositoryName=name, imageIds=[image_id])
    return bool(answer["images"])


async def untagged_count(upstream: EmulatorProcess, name: str) -> int:
    async with ecr_client(upstream.url) as ecr:
        answer = await ecr.list_images(repositoryName=name, filter={"tagStatus": "UNTAGGED"})
    return len(answer["imageIds"])


async def push(session: aiohttp.ClientSession, gateway: GatewayProcess, name: str) -> str:
    digest, _ = await OciClient(session, gateway.url).push_image(
        name, "v1", [os.urandom(1500)])
    return digest


async def delete(session: aiohttp.ClientSession, url: str) -> int:
    async with session.delete(url) as r:
        body = await r.read()
        assert r.status < 500 or r.status in (502, 503), body  # an upstream failure, named
        if r.status >= 400:
            assert (await r.json())["errors"][0]["code"], body
        return r.status


FAULTS: list[dict[str, Any]] = [
    {"action": "BatchGetImage", "error": "AccessDeniedException"},
    {"action": "PutImage", "error": "AccessDeniedException"},
    {"action": "BatchDeleteImage", "error": "AccessDeniedException"},
    {"action": "BatchDeleteImage", "error": "AccessDeniedException", "after": True},
    {"action": "BatchDeleteImage", "error": "AccessDeniedException", "count": 2},
    {"action": "DescribeImages", "error": "AccessDeniedException"},
    {"action": "PutImage", "error": "AccessDeniedException", "count": 2},
]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f"{f['action']}-"
                         f"{f.get('count', 1)}{'-after' if f.get('after') else ''}")
async def test_a_failed_call_never_loses_the_image(
        upstream: EmulatorProcess, tmp_path: Path, fault: dict[str, Any]) -> None:
    name = f"untag/fault-{os.urandom(4).hex()}"
    with GatewayProcess(tmp_path / "gw", SETTINGS, upstream_url=upstream.url) as gateway:
        async with aiohttp.ClientSession() as session:
            digest = await push(session, gateway, name)
            faults_admin(upstream, "POST", {"count": 1, **fault})
            first = await delete(session, f"{gateway.url}/v2/{name}/manifests/v1")
            faults_admin(upstream, "DELETE")
            assert await ecr_has(upstream, name, imageDigest=digest), first
            # Once ECR answers again the untag completes (or already had), and the image
            # is still there, untagged.
            again = await delete(session, f"{gateway.url}/v2/{name}/manifests/v1")
            assert 202 in (first, again) or again == 404, (first, again)
            assert not await ecr_has(upstream, name, imageTag="v1")
            assert await ecr_has(upstream, name, imageDigest=digest)
            async with session.get(f"{gateway.url}/v2/{name}/manifests/{digest}") as r:
                assert r.status == 200
            # Deleting the image works, whatever the interrupted untag left.
            assert await delete(session, f"{gateway.url}/v2/{name}/manifests/{digest}") == 202
            assert not await ecr_has(upstream, name, imageDigest=digest)


@pytest.mark.parametrize("slow", ["BatchGetImage", "PutImage", "BatchDeleteImage",
                                  "DescribeImages"])
async def test_kill9_mid_untag_never_loses_the_image(
        upstream: EmulatorProcess, tmp_path: Path, slow: str) -> None:
    """The gateway dies while one of the untag's ECR calls is under way (the emulator
    still performs it): the image is pullable by digest, and deletable afterwards."""
    name = f"untag/kill-{os.urandom(4).hex()}"
    gateway = GatewayProcess(tmp_path / "gw", SETTINGS, upstream_url=upstream.url)
    with gateway:
        async with aiohttp.ClientSession() as session:
            digest = await push(session, gateway, name)
            faults_admin(upstream, "POST", {"action": slow, "latency": 1.5, "count": 1})
            request = asyncio.create_task(
                delete(session, f"{gateway.url}/v2/{name}/manifests/v1"))
            await asyncio.sleep(0.7)  # the slowed call is on its way
            gateway.kill9()
            with pytest.raises(aiohttp.ClientError):
                await request
            await asyncio.sleep(1.5)  # the emulator completes the call the dead process made
            assert await ecr_has(upstream, name, imageDigest=digest)
            gateway.start()
            # The user repeats the untag; the image is still there, and can be deleted.
            assert await delete(session, f"{gateway.url}/v2/{name}/manifests/v1") in (202, 404)
            assert not await ecr_has(upstream, name, imageTag="v1")
            assert await ecr_has(upstream, name, imageDigest=digest)
            assert await delete(session, f"{gateway.url}/v2/{name}/manifests/{digest}") == 202
            assert await untagged_count(upstream, name) == 0  # no holder left behind
