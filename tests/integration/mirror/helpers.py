"""Pulls the way containerd makes them as a mirror client, and ECR call counting."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient

MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "*/*",
])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    name: str
    tag: str
    digest: str
    manifest: bytes
    config: bytes
    layers: list[bytes]
    blobs: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.blobs = {sha256(b): b for b in [self.config, *self.layers]}


async def push_image(gateway_url: str, name: str, tag: str = "v1",
                     layer_sizes: tuple[int, ...] = (200_000, 300_000, 100_000)) -> Image:
    """Random layers and a config unique to this image, pushed through ``gateway_url``."""
    layers = [os.urandom(size) for size in layer_sizes]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Labels": {"id": uuid.uuid4().hex}}}).encode()
    async with aiohttp.ClientSession() as session:
        digest, manifest = await OciClient(session, gateway_url).push_image(
            name, tag, layers, config)
    return Image(name, tag, digest, manifest, config, layers)


@dataclass
class Pulled:
    digest: str
    manifest: bytes
    blobs: dict[str, bytes]
    head_headers: dict[str, str]


def _query(ns: str | None) -> str:
    return f"?ns={ns}" if ns else ""


async def pull(session: aiohttp.ClientSession, base: str, name: str, tag: str,
               ns: str | None = None) -> Pulled:
    """HEAD the tag, GET the manifest by digest, GET every blob: containerd's order, with
    its ``?ns=`` on every request. Redirects (blob mode redirect) are followed."""
    q = _query(ns)
    async with session.head(f"{base}/v2/{name}/manifests/{tag}{q}",
                            headers={"Accept": MANIFEST_ACCEPT}) as r:
        assert r.status == 200, (r.status, r.headers)
        head = dict(r.headers)
    digest = head["Docker-Content-Digest"]
    async with session.get(f"{base}/v2/{name}/manifests/{digest}{q}",
                           headers={"Accept": MANIFEST_ACCEPT}) as r:
        assert r.status == 200, (r.status, await r.text())
        manifest = await r.read()
    doc = json.loads(manifest)
    blobs: dict[str, bytes] = {}
    for descriptor in [doc["config"], *doc["layers"]]:
        async with session.get(f"{base}/v2/{name}/blobs/{descriptor['digest']}{q}") as r:
            assert r.status == 200, (r.status, await r.text())
            blobs[descriptor["digest"]] = await r.read()
    return Pulled(digest, manifest, blobs, head)


def check_pulled(pulled: Pulled, image: Image) -> None:
    assert pulled.digest == image.digest
    assert pulled.manifest == image.manifest
    assert pulled.blobs == image.blobs
    assert pulled.head_headers["Content-Length"] == str(len(image.manifest))


def ecr_calls(upstream: EmulatorProcess, *repositories: str) -> Counter[str]:
    """ECR API calls the emulator logged for these repositories (layer downloads from the
    presigned URLs are S3's business, not ECR calls, and are left out)."""
    return Counter(e["action"] for e in upstream.requests()
                   if e["action"] != "LayerDownload"
                   and (not repositories or e.get("repository") in repositories))


def downloads(upstream: EmulatorProcess) -> list[dict[str, Any]]:
    """Reads of presigned layer URLs (the gateway fetching bytes from 'S3')."""
    return upstream.requests("LayerDownload")


async def get(session: aiohttp.ClientSession, url: str,
              **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    async with session.get(url, **kwargs) as r:
        return r.status, dict(r.headers), await r.read()


def access_log_until(gw: GatewayProcess, done: Callable[[list[dict[str, Any]]], bool],
                     timeout: float = 5.0) -> list[dict[str, Any]]:
    """The gateway's access log once ``done`` holds for it (lines arrive through a pipe)."""
    deadline = time.monotonic() + timeout
    while True:
        entries = gw.access_log()
        if done(entries) or time.monotonic() > deadline:
            return entries
        time.sleep(0.05)


async def ecr_image(upstream: EmulatorProcess, repository: str,
                     reference: str) -> dict[str, Any]:
    """The image as ECR holds it, once the background fill has put it there."""
    image_id = {"imageDigest": reference} if reference.startswith("sha256:") \
        else {"imageTag": reference}
    deadline = time.monotonic() + 20.0
    async with ecr_client(upstream.url) as ecr:
        while True:
            try:
                answer = await ecr.batch_get_image(repositoryName=repository,
                                                   imageIds=[image_id])
                if answer["images"]:
                    image: dict[str, Any] = answer["images"][0]
                    return image
            except ecr.exceptions.RepositoryNotFoundException:
                pass
            assert time.monotonic() < deadline, f"{repository}:{reference} never reached ECR"
            await asyncio.sleep(0.1)
