"""An image deleted through the gateway takes its layers' download answers with it: no
identity (auth.mode aws: each caller's own cached view of the repository), on this replica
or on another one sharing Redis, is served a layer of that image from a download URL or a
membership the gateway kept from before the delete. A layer deleted because it held a
leaked secret is not handed out for the caches' five minutes; ECR answers again, and
refuses a layer no image references any more (404). Proxy mode's blob cache serves a layer
only while ECR does: ECR's layer check goes on finding a deleted image's layers, which the
cache then served for as long as it kept them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.auth.helpers import basic
from tests.integration.state.conftest import redis_server, redis_state, replica
from tests.support.emulator import EmulatorProcess, ecr_client, writer_and_reader
from tests.support.gateway import GatewayProcess
from tests.support.hostile import LateAnswers, Server
from tests.support.oci import OCI_MANIFEST, OciClient, digest_of
from tests.support.polling import until

__all__ = ["redis_server"]  # the fixture

# Kept far longer than the test runs: only the delete can end these answers.
CACHE = {"manifest_revalidate_seconds": 300, "download_url_ttl_seconds": 300,
         "tag_ttl_seconds": 300}


async def _blob_status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url, allow_redirects=False) as r:
        await r.read()
        return r.status


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("blobs", ["redirect", "proxy", "proxy+cache"])
async def test_a_deleted_images_layers_are_not_served_from_another_identitys_answers(
        upstream: EmulatorProcess, tmp_path: Path, request: pytest.FixtureRequest,
        blobs: str, replicas: int) -> None:
    writer, reader = writer_and_reader(upstream)

    def config(label: str) -> dict[str, Any]:
        mode: dict[str, Any] = {"mode": blobs.partition("+")[0]}
        if blobs == "proxy+cache":
            mode["cache"] = {"path": str(tmp_path / f"blobs-{label}")}
        return {"auth": {"mode": "aws"}, "blobs": mode, "cache": CACHE}

    with contextlib.ExitStack() as stack:
        if replicas == 1:
            one = stack.enter_context(GatewayProcess(tmp_path / "gw", config("gw"),
                                                     upstream_url=upstream.url))
            written_at = read_at = one.url
        else:
            state = redis_state(request.getfixturevalue("redis_server"))
            written_at, read_at = (stack.enter_context(replica(
                tmp_path / label, upstream, state, **config(label))).url for label in "ab")
        async with aiohttp.ClientSession(headers=basic(*writer)) as a, \
                aiohttp.ClientSession(headers=basic(*reader)) as b:
            name = f"leaked/{uuid.uuid4().hex[:8]}"
            secret_layer = os.urandom(3000)
            image, _ = await OciClient(a, written_at).push_image(name, "v1", [secret_layer])
            blob_url = f"{read_at}/v2/{name}/blobs/{digest_of(secret_layer)}"
            # The reader pulls: the image's manifest, then the layer (a download URL kept
            # for its view of the repository, which holds the layer).
            async with b.get(f"{read_at}/v2/{name}/manifests/v1",
                             headers={"Accept": OCI_MANIFEST}) as r:
                assert r.status == 200
            served = 307 if blobs == "redirect" else 200
            assert await _blob_status(b, blob_url) == served

            async with a.delete(f"{written_at}/v2/{name}/manifests/{image}") as r:
                assert r.status == 202, await r.text()
            # ECR no longer serves the layer (no image references it): neither does the
            # gateway, to the reader or the writer, on either replica.
            assert await _blob_status(b, blob_url) == 404
            assert await _blob_status(a, blob_url) == 404
            if replicas == 2:
                assert await _blob_status(a, blob_url.replace(read_at, written_at)) == 404
            # Nor is it copied into a repository of the reader's by a cross-repository
            # mount: 202, an upload to make instead of 201, mounted.
            mount = (f"{read_at}/v2/{name}-copy/blobs/uploads/"
                     f"?mount={digest_of(secret_layer)}&from={name}")
            async with b.post(mount) as r:
                assert r.status == 202, await r.text()


async def test_a_layer_deleted_behind_the_gateway_leaves_the_blob_cache_within_the_bound(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """Deleted in ECR itself (the console, another client), the image goes unnoticed, but
    the blob cache serves its layer no longer than what the gateway learned of it is
    trusted (auth.mode aws: ``cache.manifest_revalidate_seconds``): ECR's layer check still
    finds the layer, its download URL no longer does."""
    revalidate = 2.0
    writer, reader = writer_and_reader(upstream)
    config = {"auth": {"mode": "aws"},
              "blobs": {"mode": "proxy", "cache": {"path": str(tmp_path / "blobs")}},
              "cache": {**CACHE, "manifest_revalidate_seconds": revalidate}}
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
        async with aiohttp.ClientSession(headers=basic(*writer)) as a, \
                aiohttp.ClientSession(headers=basic(*reader)) as b:
            name = f"leaked/{uuid.uuid4().hex[:8]}"
            secret_layer = os.urandom(3000)
            image, _ = await OciClient(a, gw.url).push_image(name, "v1", [secret_layer])
            async with b.get(f"{gw.url}/v2/{name}/manifests/v1",
                             headers={"Accept": OCI_MANIFEST}) as r:
                assert r.status == 200
            blob_url = f"{gw.url}/v2/{name}/blobs/{digest_of(secret_layer)}"
            assert await _blob_status(b, blob_url) == 200  # now in the blob cache
            async with ecr_client(upstream.url, access_key_id=writer[0],
                                  secret_access_key=writer[1]) as ecr:
                answer = await ecr.batch_delete_image(repositoryName=name,
                                                      imageIds=[{"imageDigest": image}])
                assert not answer["failures"]
                layers = await ecr.batch_check_layer_availability(
                    repositoryName=name, layerDigests=[digest_of(secret_layer)])
                assert layers["layers"][0]["layerAvailability"] == "AVAILABLE"
            await asyncio.sleep(revalidate + 0.5)
            assert await _blob_status(b, blob_url) == 404
            assert await _blob_status(a, blob_url) == 404


@pytest.mark.parametrize("blobs", ["redirect", "proxy+cache"])
async def test_a_read_after_the_delete_takes_no_answer_asked_for_before_it(
        upstream: EmulatorProcess, tmp_path: Path, blobs: str) -> None:
    """A read of a layer asks ECR for its download URL, and ECR answers before the image is
    deleted; the answer is on its way when the delete is acknowledged (202). A read that
    starts after the 202 must not share that call: it was ECR's answer from before the
    delete (a 307 to the deleted layer, or the blob cache's copy of it, here one kept from
    before a restart)."""
    mode: dict[str, Any] = {"mode": blobs.partition("+")[0]}
    if blobs == "proxy+cache":
        mode["cache"] = {"path": str(tmp_path / "blobs")}
    late = LateAnswers(upstream.url, "GetDownloadUrlForLayer")
    async with Server(late) as hop:
        gw = GatewayProcess(tmp_path / "gw", {"blobs": mode, "cache": CACHE},
                            upstream_url=upstream.url)
        gw.config["upstream"]["endpoint_url"] = hop.url  # signed for the emulator's host
        with gw:
            async with aiohttp.ClientSession() as session:
                name = f"leaked/{uuid.uuid4().hex[:8]}"
                secret_layer = os.urandom(3000)
                image, _ = await OciClient(session, gw.url).push_image(name, "v1",
                                                                       [secret_layer])
                blob_url = f"{gw.url}/v2/{name}/blobs/{digest_of(secret_layer)}"
                served = 307 if blobs == "redirect" else 200
                assert await _blob_status(session, blob_url) == served  # into the blob cache
                gw.stop()  # what it learned of the repository is gone, the blob cache kept
                gw.start()
                late.hold, asked = 2.0, late.answered
                before = asyncio.create_task(_blob_status(session, blob_url))
                assert await until(lambda: late.answered > asked, 10, step=0.01), \
                    "ECR was not asked"
                async with session.delete(f"{gw.url}/v2/{name}/manifests/{image}") as r:
                    assert r.status == 202, await r.text()
                after = await _blob_status(session, blob_url)
                late.hold = 0.0
                assert after == 404, "a read after the delete was served the deleted layer"
                assert await before == served  # asked before the delete: ECR's answer then


async def test_a_manifest_read_after_the_delete_takes_no_answer_asked_for_before_it(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """The same for the image's manifest: a read by digest that starts once the delete was
    acknowledged shares no BatchGetImage call made before it (a 200 for the deleted image)."""
    late = LateAnswers(upstream.url, "BatchGetImage")
    async with Server(late) as hop:
        gw = GatewayProcess(tmp_path / "gw", {"cache": CACHE}, upstream_url=upstream.url)
        gw.config["upstream"]["endpoint_url"] = hop.url  # signed for the emulator's host
        with gw:
            async with aiohttp.ClientSession() as session:
                name = f"leaked/{uuid.uuid4().hex[:8]}"
                image, _ = await OciClient(session, gw.url).push_image(name, "v1",
                                                                       [os.urandom(3000)])
                manifest_url = f"{gw.url}/v2/{name}/manifests/{image}"
                gw.stop()  # what it kept of the push is gone
                gw.start()
                late.hold, asked = 2.0, late.answered
                before = asyncio.create_task(_blob_status(session, manifest_url))
                assert await until(lambda: late.answered > asked, 10, step=0.01), \
                    "ECR was not asked"
                async with session.delete(manifest_url) as r:
                    assert r.status == 202, await r.text()
                after = await _blob_status(session, manifest_url)
                late.hold = 0.0
                assert after == 404, "a read after the delete was served the deleted image"
                assert await before == 200  # asked before the delete: ECR's answer then
