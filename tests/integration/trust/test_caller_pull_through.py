"""``auth.mode: aws`` with a pull-through mirror: each caller's own keys decide what it
reads, also of what the gateway fetches from the upstream with the gateway's upstream
credentials. A key that may not read the mirror's ECR repository gets none of the
upstream's bytes, even once another caller's pull created that repository and filled it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.integration.auth.helpers import basic, request
from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.hostile import Server
from tests.support.oci import OCI_MANIFEST, image_manifest

RUN = uuid.uuid4().hex[:8].upper()
FILLER = (f"AKIDFILLER{RUN}", f"secret-filler-{uuid.uuid4().hex}")
NOREAD = (f"AKIDNOREAD{RUN}", f"secret-noread-{uuid.uuid4().hex}")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Image:
    """One image the upstream serves, and a blob of it no manifest names yet."""

    def __init__(self) -> None:
        self.config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        self.layer = os.urandom(3000)
        self.private = b"private upstream bytes " + os.urandom(2000)
        self.manifest = image_manifest(self.config, [self.layer])
        self.blobs = {_digest(b): b for b in (self.config, self.layer, self.private)}

    async def serve(self, request: web.Request) -> web.StreamResponse:
        last = request.path.rsplit("/", 1)[-1]
        if "/manifests/" in request.path:
            return web.Response(body=self.manifest, content_type=OCI_MANIFEST,
                                headers={"Docker-Content-Digest": _digest(self.manifest)})
        if last in self.blobs:
            return web.Response(body=self.blobs[last],
                                content_type="application/octet-stream")
        return web.json_response({"errors": [{"code": "NOT_FOUND"}]}, status=404)


@pytest.fixture(scope="module")
def keys(upstream: EmulatorProcess) -> Iterator[None]:
    upstream.add_key(*FILLER)
    upstream.add_key(*NOREAD)
    upstream.control("PUT", "policies", {
        FILLER[0]: [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}],
        NOREAD[0]: [{"Effect": "Allow", "Action": "ecr:GetAuthorizationToken"}]})
    yield


async def _filled(upstream: EmulatorProcess, repository: str) -> None:
    async with ecr_client(upstream.url) as ecr:
        for _ in range(100):
            try:
                found = await ecr.describe_images(repositoryName=repository)
                if found["imageDetails"]:
                    return
            except ecr.exceptions.RepositoryNotFoundException:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"{repository} was never filled")


async def test_attacker_without_read_rights_gets_no_upstream_bytes(
        upstream: EmulatorProcess, keys: None, tmp_path: Path) -> None:
    image = Image()
    async with Server(image.serve) as hub, aiohttp.ClientSession() as session:
        config = {"auth": {"mode": "aws"}, "mirrors": {"docker.io": {
            "repository_prefix": "docker-hub", "upstream": {"url": hub.url}}}}
        with GatewayProcess(tmp_path / "gw", config,
                            upstream_url=upstream.url) as gw:
            base = f"{gw.url}/v2/library/app"
            pulled = await request(session, "GET", f"{base}/manifests/v1?ns=docker.io",
                                   {**basic(*FILLER), "Accept": OCI_MANIFEST})
            assert pulled.status == 200 and pulled.body == image.manifest, pulled.body[:300]
            await _filled(upstream, "docker-hub/library/app")
            noread = basic(*NOREAD)
            for path in (f"blobs/{_digest(image.private)}", f"blobs/{_digest(image.layer)}",
                         f"manifests/{_digest(image.manifest)}", "manifests/v1"):
                answer = await request(session, "GET", f"{base}/{path}?ns=docker.io", noread)
                assert answer.status == 403 and answer.code == "DENIED", \
                    (path, answer.status, answer.body[:300])
                assert image.private not in answer.body
            asked = [p for p, _auth in hub.seen]
            assert f"/v2/library/app/blobs/{_digest(image.private)}" not in asked


async def test_a_key_that_only_checks_layers_gets_no_upstream_bytes(
        upstream: EmulatorProcess, keys: None, tmp_path: Path) -> None:
    """Checking which layers the mirror's repository holds (BatchCheckLayerAvailability)
    is not reading them: such a key got the upstream's bytes of a blob streamed to it."""
    image = Image()
    checker = (f"AKIDCHECKER{RUN}", f"secret-checker-{uuid.uuid4().hex}")
    upstream.add_key(*checker)
    upstream.add_policies({checker[0]: [
        {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken",
                                       "ecr:BatchCheckLayerAvailability"], "Resource": "*"}]})
    async with Server(image.serve) as hub, aiohttp.ClientSession() as session:
        config = {"auth": {"mode": "aws"}, "mirrors": {"docker.io": {
            "repository_prefix": "docker-hub", "upstream": {"url": hub.url}}}}
        with GatewayProcess(tmp_path / "gw", config,
                            upstream_url=upstream.url) as gw:
            base = f"{gw.url}/v2/library/checked"
            pulled = await request(session, "GET", f"{base}/manifests/v1?ns=docker.io",
                                   {**basic(*FILLER), "Accept": OCI_MANIFEST})
            assert pulled.status == 200, pulled.body[:300]
            await _filled(upstream, "docker-hub/library/checked")
            for blob in (image.private, image.layer):
                answer = await request(session, "GET",
                                       f"{base}/blobs/{_digest(blob)}?ns=docker.io",
                                       basic(*checker))
                assert answer.status == 403 and answer.code == "DENIED", \
                    (answer.status, answer.body[:300])
                assert blob not in answer.body
