"""An image or a repository deleted behind the gateway (in ECR itself, a lifecycle rule,
another gateway) takes its layers' download answers with it as soon as the gateway learns
of it: a DELETE that ECR answers "no such image", or a manifest read that ECR answers "no
such image" or "no such repository". Neither the replica that learned it nor another one
sharing Redis goes on handing out the image's layers (a layer deleted because it held a
leaked secret, say) from a download URL or a membership kept for five minutes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.state.conftest import redis_server, redis_state, replica
from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.oci import OCI_MANIFEST, OciClient, digest_of

__all__ = ["redis_server"]  # the fixture

# Blob answers are kept far longer than the test runs; manifests are read from ECR again
# after a second (the read that finds the image gone).
CACHE = {"manifest_revalidate_seconds": 300, "download_url_ttl_seconds": 300,
         "tag_ttl_seconds": 300}
REVALIDATE = 1.0


async def _status(session: aiohttp.ClientSession, method: str, url: str) -> int:
    async with session.request(method, url, allow_redirects=False,
                               headers={"Accept": OCI_MANIFEST}) as r:
        await r.read()
        return r.status


@contextlib.contextmanager
def _gateways(upstream: EmulatorProcess, tmp_path: Path, request: pytest.FixtureRequest,
              replicas: int, blobs: str, cache: dict[str, Any]
              ) -> Any:
    """The gateway that learns of the deletion and the one that served the layer."""
    def config(label: str) -> dict[str, Any]:
        mode: dict[str, Any] = {"mode": blobs.partition("+")[0]}
        if blobs.endswith("+cache"):
            mode["cache"] = {"path": str(tmp_path / f"blobs-{label}")}
        return {"blobs": mode, "cache": cache}

    with contextlib.ExitStack() as stack:
        if replicas == 1:
            one = stack.enter_context(GatewayProcess(tmp_path / "gw", config("gw"),
                                                     upstream_url=upstream.url))
            yield one.url, one.url
        else:
            state = redis_state(request.getfixturevalue("redis_server"))
            yield tuple(stack.enter_context(replica(
                tmp_path / label, upstream, state, **config(label))).url for label in "ab")


async def _pushed_and_served(session: aiohttp.ClientSession, learns: str, serves: str,
                             blobs: str) -> tuple[str, str, str]:
    """An image pushed, its manifest and layer served (and kept) by both gateways: its
    name, digest and layer URL on ``serves``."""
    name = f"gone/{uuid.uuid4().hex[:8]}"
    layer = os.urandom(3000)
    image, _ = await OciClient(session, learns).push_image(name, "v1", [layer])
    for url in {learns, serves}:
        assert await _status(session, "GET", f"{url}/v2/{name}/manifests/v1") == 200
        blob = f"{url}/v2/{name}/blobs/{digest_of(layer)}"
        assert await _status(session, "GET", blob) == (307 if blobs == "redirect" else 200)
    return name, image, f"{serves}/v2/{name}/blobs/{digest_of(layer)}"


async def _delete_in_ecr(upstream: EmulatorProcess, name: str, image: str) -> None:
    async with ecr_client(upstream.url) as ecr:
        answer = await ecr.batch_delete_image(repositoryName=name,
                                              imageIds=[{"imageDigest": image}])
        assert not answer["failures"]


async def _gone_in_ecr(upstream: EmulatorProcess, gone: str, name: str, image: str) -> None:
    if gone == "image":
        await _delete_in_ecr(upstream, name, image)
    else:
        async with ecr_client(upstream.url) as ecr:
            await ecr.delete_repository(repositoryName=name, force=True)


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("blobs", ["redirect", "proxy+cache"])
@pytest.mark.parametrize("gone", ["image", "repository"])
async def test_a_delete_of_an_image_already_gone_drops_its_layers_answers_everywhere(
        upstream: EmulatorProcess, tmp_path: Path, request: pytest.FixtureRequest,
        blobs: str, replicas: int, gone: str) -> None:
    with _gateways(upstream, tmp_path, request, replicas, blobs, CACHE) as (learns, serves):
        async with aiohttp.ClientSession() as session:
            name, image, blob = await _pushed_and_served(session, learns, serves, blobs)
            await _gone_in_ecr(upstream, gone, name, image)
            # The client's DELETE finds it gone: 404 as before, and every replica forgets.
            async with session.delete(f"{learns}/v2/{name}/manifests/{image}") as r:
                assert r.status == 404, await r.text()
                assert (await r.json())["errors"][0]["code"] == (
                    "MANIFEST_UNKNOWN" if gone == "image" else "NAME_UNKNOWN")
            assert await _status(session, "GET", f"{serves}/v2/{name}/manifests/{image}") == 404
            assert await _status(session, "GET", blob) == 404


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("blobs", ["redirect", "proxy+cache"])
@pytest.mark.parametrize("gone", ["image", "repository"])
@pytest.mark.parametrize("read", ["GET", "HEAD"])
async def test_a_manifest_read_finding_the_image_gone_drops_its_layers_answers(
        upstream: EmulatorProcess, tmp_path: Path, request: pytest.FixtureRequest,
        blobs: str, replicas: int, gone: str, read: str) -> None:
    cache = {**CACHE, "manifest_revalidate_seconds": REVALIDATE}
    with _gateways(upstream, tmp_path, request, replicas, blobs, cache) as (learns, serves):
        async with aiohttp.ClientSession() as session:
            name, image, blob = await _pushed_and_served(session, learns, serves, blobs)
            await _gone_in_ecr(upstream, gone, name, image)
            # The pull of a client after the manifest's bound: ECR has no such image.
            await asyncio.sleep(REVALIDATE + 0.3)
            assert await _status(session, read, f"{learns}/v2/{name}/manifests/v1") == 404
            assert await _status(session, "GET", blob) == 404
            assert await _status(session, "GET", blob.replace(serves, learns)) == 404


@pytest.mark.parametrize("reference", ["tag", "digest"])
async def test_a_read_for_a_type_the_image_is_not_drops_nobodys_answers(
        upstream: EmulatorProcess, tmp_path: Path, request: pytest.FixtureRequest,
        reference: str) -> None:
    """ECR answers "no such image" to a read by digest whose accepted types exclude the
    image's own (a client's Accept: Docker schema 2 only, for an OCI image), and a
    converted manifest to such a read by tag: the image is there, and neither answer may
    count as its deletion. The first did: any reader, sending such a read once per pull of
    others, dropped the repository's layer answers on every replica."""
    with _gateways(upstream, tmp_path, request, 2, "redirect", CACHE) as (learns, serves):
        async with aiohttp.ClientSession() as session:
            name, image, blob = await _pushed_and_served(session, learns, serves, "redirect")
            ref = "v1" if reference == "tag" else image
            async with session.get(f"{learns}/v2/{name}/manifests/{ref}", headers={
                    "Accept": "application/vnd.docker.distribution.manifest.v2+json"}) as r:
                assert r.status == (200 if reference == "tag" else 404), await r.text()
            await asyncio.sleep(0.5)  # another replica's notice would have come by now
            upstream.clear_requests()
            for url in (learns, serves):
                assert await _status(session, "GET", blob.replace(serves, url)) == 307
            assert upstream.requests("GetDownloadUrlForLayer") == [], \
                "a read of another type made the layer's answers be asked for again"
            assert await _status(session, "GET", f"{learns}/v2/{name}/manifests/{image}") == 200
