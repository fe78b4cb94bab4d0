"""An image or a repository deleted behind the gateway in ECR Public (the console, another
client) takes its layers' download answers with it once a manifest read from the registry
endpoint finds it gone, as on ECR: the layer is not handed out for another five minutes
from a download URL kept for it."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.emulator.extra.helpers import public_client
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OCI_MANIFEST, OciClient, digest_of

REVALIDATE = 1.0
CONFIG = {
    "routes": [{"prefix": "pub", "upstream_kind": "ecr-public", "registry_url": ""}],
    "cache": {"manifest_revalidate_seconds": REVALIDATE, "download_url_ttl_seconds": 300,
              "tag_ttl_seconds": 300},
}


async def _status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url, allow_redirects=False, headers={"Accept": OCI_MANIFEST}) as r:
        await r.read()
        return r.status


@pytest.mark.parametrize("gone", ["image", "repository"])
async def test_a_manifest_read_finding_it_gone_drops_its_layers_download_urls(
        upstream: EmulatorProcess, tmp_path: Path, gone: str) -> None:
    config = {**CONFIG, "routes": [{**CONFIG["routes"][0], "registry_url": upstream.url}]}
    app = f"gone-{uuid.uuid4().hex[:8]}"
    layer = os.urandom(3000)
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
        async with aiohttp.ClientSession() as session:
            image, _ = await OciClient(session, gw.url).push_image(f"pub/{app}", "v1", [layer])
            blob = f"{gw.url}/v2/pub/{app}/blobs/{digest_of(layer)}"
            assert await _status(session, f"{gw.url}/v2/pub/{app}/manifests/v1") == 200
            assert await _status(session, blob) == 307
            async with public_client(upstream.url) as ecr_public:
                if gone == "image":
                    await ecr_public.batch_delete_image(repositoryName=app,
                                                        imageIds=[{"imageDigest": image}])
                else:
                    await ecr_public.delete_repository(repositoryName=app, force=True)
            await asyncio.sleep(REVALIDATE + 0.3)  # the manifest is read from ECR again
            assert await _status(session, f"{gw.url}/v2/pub/{app}/manifests/v1") == 404
            upstream.clear_requests()
            status = await _status(session, blob)
            # Asked again, not the URL kept for the deleted image's layer.
            asked = [e["action"] for e in upstream.requests() if e.get("repository") == app]
            assert "ecr-public:RegistryBlob" in asked, asked
            assert status == 404
