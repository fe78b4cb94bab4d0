"""Mounts of one blob into one repository asked for at once make one copy.

ECR has no cross-repository mount, so the gateway copies the blob (a download from the
source, an upload into the target). Each request used to make its own copy: 12 requests
of a few bytes each had the gateway download and upload the whole layer 12 times.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OCI_MANIFEST, OciClient, digest_of, image_manifest

MiB = 1024 * 1024
MOUNTS = 12


@pytest.fixture
async def client(gateway: GatewayProcess) -> AsyncIterator[OciClient]:
    async with aiohttp.ClientSession() as session:
        yield OciClient(session, gateway.url)


async def test_mounts_of_one_blob_at_once_copy_it_once(client: OciClient,
                                                      upstream: EmulatorProcess,
                                                      repo: str) -> None:
    layer = os.urandom(12 * MiB)
    await client.push_image(repo, "v1", [layer])  # ECR serves the layer: a mount downloads it
    digest = digest_of(layer)
    target = repo + "-copy"
    upstream.clear_requests()

    async def mount() -> int:
        async with client.session.post(client.url(f"/v2/{target}/blobs/uploads/"),
                                       params={"mount": digest, "from": repo},
                                       allow_redirects=False) as r:
            await r.read()
            return r.status

    assert await asyncio.gather(*[mount() for _ in range(MOUNTS)]) == [201] * MOUNTS
    calls = Counter(request.get("action") for request in upstream.requests())
    assert calls["LayerDownload"] == 1, calls
    assert calls["CompleteLayerUpload"] == 1, calls
    assert calls["UploadLayerPart"] <= 2, calls  # one copy of 12 MiB in 10 MiB parts

    # The copy serves the target: an image there may use it, and it reads back whole.
    config = b'{"architecture":"amd64","os":"linux"}'
    await client.push_blob(target, config)
    async with client.session.put(client.url(f"/v2/{target}/manifests/v1"),
                                  data=image_manifest(config, [layer]),
                                  headers={"Content-Type": OCI_MANIFEST}) as r:
        assert r.status == 201, await r.text()
    assert await client.get_blob(target, digest) == layer
