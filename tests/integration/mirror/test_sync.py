"""``ecr-gateway sync`` copies a tag pattern from a real distribution into ECR (the emulator),
and a second run moves nothing; failures are listed and make the exit status 1."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from bench.services import ReferenceRegistry
from tests.integration.mirror.helpers import ecr_image
from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.hostile import Server
from tests.support.oci import OciClient

TAGS = ("1.0.0", "1.1.0", "1.2.0-rc.1", "2.0.0", "latest")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceRegistry]:
    registry = ReferenceRegistry(tmp_path_factory.mktemp("hub")).start()
    yield registry
    registry.stop()


@pytest.fixture
async def pushed(hub: ReferenceRegistry) -> AsyncIterator[dict[str, str]]:
    """library/app with one image per tag in TAGS (sharing a base layer)."""
    digests = {}
    async with aiohttp.ClientSession() as http:
        client = OciClient(http, hub.url)
        for tag in TAGS:
            digest, _ = await client.push_image("library/app", tag,
                                                [b"base" * 50_000, tag.encode() * 1000])
            digests[tag] = digest
    yield digests


def sync_config(upstream: EmulatorProcess, tmp_path: Path) -> Path:
    """A configuration file for ``ecr-gateway sync`` into the emulator."""
    config: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "upstream": {"mode": "aws", "endpoint_url": upstream.url,
                     "access_key_id": "AKIDSYNCTEST",
                     "secret_access_key": upstream.secret_for("AKIDSYNCTEST")},
        "routes": [{"prefix": "", "create_on_push": True}]}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _sync(upstream: EmulatorProcess, tmp_path: Path,
          *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "sync", "--config",
                           str(sync_config(upstream, tmp_path)), *args],
                          capture_output=True, text=True, timeout=300)


async def _tags(upstream: EmulatorProcess, repository: str) -> set[str]:
    async with ecr_client(upstream.url) as ecr:
        answer = await ecr.list_images(repositoryName=repository,
                                       filter={"tagStatus": "TAGGED"})
    return {i["imageTag"] for i in answer["imageIds"]}


async def test_sync_a_semver_range_then_nothing_moves(
        upstream: EmulatorProcess, hub: ReferenceRegistry, pushed: dict[str, str],
        tmp_path: Path) -> None:
    first = _sync(upstream, tmp_path, f"{hub.url}/library/app", "mirror/app",
                  "--semver", ">=1.0.0 <2")
    assert first.returncode == 0, first.stderr
    assert "2 images: 2 copied, 0 unchanged, 0 failed" in first.stdout, first.stdout
    assert await _tags(upstream, "mirror/app") == {"1.0.0", "1.1.0"}
    for tag in ("1.0.0", "1.1.0"):
        image = await ecr_image(upstream, "mirror/app", tag)
        assert image["imageId"]["imageDigest"] == pushed[tag]

    upstream.clear_requests()
    second = _sync(upstream, tmp_path, f"{hub.url}/library/app", "mirror/app",
                   "--semver", ">=1.0.0 <2")
    assert second.returncode == 0, second.stderr
    assert "2 images: 0 copied, 2 unchanged, 0 failed" in second.stdout, second.stdout
    moved = [r["action"] for r in upstream.requests()
             if r["action"] in ("InitiateLayerUpload", "UploadLayerPart", "PutImage")]
    assert moved == []


async def test_sync_file_skips_layers_ecr_holds_and_lists_failures(
        upstream: EmulatorProcess, hub: ReferenceRegistry, pushed: dict[str, str],
        tmp_path: Path) -> None:
    images = tmp_path / "images.yaml"
    images.write_text(yaml.safe_dump({"images": [
        {"source": f"{hub.url}/library/app", "destination": "filed/app",
         "tags": {"regex": "1\\..*", "last": 1}},
        {"source": f"{hub.url}/library/app:latest", "destination": "filed/app"},
        {"source": f"{hub.url}/library/nothing-here", "destination": "filed/none"},
    ]}))
    upstream.clear_requests()
    result = _sync(upstream, tmp_path, "--file", str(images))
    assert result.returncode == 1
    assert "filed/none (from library/nothing-here)" in result.stderr, result.stderr
    assert "2 copied" in result.stdout and "1 failed" in result.stdout, result.stdout
    # the last of the tags matching 1\..* in version order (a pre-release of 1.2.0 is
    # above 1.1.0), and latest
    assert await _tags(upstream, "filed/app") == {"1.2.0-rc.1", "latest"}
    # Blobs the two images share (the base layer, the config) went up once each, whether
    # the other copy found them in ECR or was copying them at the same moment.
    initiated = upstream.requests("InitiateLayerUpload")
    assert len(initiated) == 1 + 1 + 2, initiated  # base, config, each image's own layer


async def test_an_image_whose_blobs_fail_leaves_no_repository(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """A source that serves the manifest but answers 500 for every blob: the copy fails
    before anything is written, so no destination repository is created for it (an empty
    one would count against the account's quota)."""
    config = b'{"architecture":"amd64","os":"linux"}'
    layer = b"never served" * 100
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _sha256(layer), "size": len(layer)}]}).encode()

    async def source(request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/library/broken/tags/list":
            return web.json_response({"name": "library/broken", "tags": ["1.0"]})
        if request.path.startswith("/v2/library/broken/manifests/"):
            return web.Response(body=manifest, headers={
                "Content-Type": "application/vnd.oci.image.manifest.v1+json",
                "Docker-Content-Digest": _sha256(manifest)})
        if "/blobs/" in request.path:
            return web.Response(status=500, text="storage backend down")
        return web.json_response({})

    async with Server(source) as hostile:
        result = await asyncio.to_thread(_sync, upstream, tmp_path,
                                         f"{hostile.url}/library/broken:1.0", "broken/app")
        assert any("/blobs/" in path for path, _ in hostile.seen), hostile.seen
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed" in result.stdout, result.stdout
    async with ecr_client(upstream.url) as ecr:
        with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
            await ecr.describe_repositories(repositoryNames=["broken/app"])


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_bad_arguments() -> None:
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "sync", "only-a-source"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("ecr-gateway sync: needs SOURCE and DESTINATION")


def test_a_plain_http_source_named_without_a_scheme_is_not_an_outage(
        upstream: EmulatorProcess, hub: ReferenceRegistry, tmp_path: Path) -> None:
    """``127.0.0.1:PORT/name`` (as docker and skopeo write it) is asked over https; a
    registry serving plain HTTP there fails the handshake, which the failure names, with
    the way to write it, rather than "could not be reached: try again later"."""
    bare = hub.url.removeprefix("http://")
    result = _sync(upstream, tmp_path, f"{bare}/library/app:1.0.0", "plain/app")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "does not speak TLS" in result.stderr, result.stderr
    assert "http://" in result.stderr and "try again later" not in result.stderr, result.stderr


async def test_a_misspelt_key_in_the_images_file_copies_nothing(
        upstream: EmulatorProcess, hub: ReferenceRegistry, pushed: dict[str, str],
        tmp_path: Path) -> None:
    """``semvar:`` for ``semver:``, ``password-file:`` for ``password_file:`` or ``image:``
    for ``images:`` is a usage error naming the key, not a file without it: every tag of
    the source copied, the source asked without the credentials meant for it, or nothing
    copied with an exit status of 0."""
    entry = {"source": f"{hub.url}/library/app", "destination": "misspelt/app"}
    for document, key in (
            ({"images": [{**entry, "tags": {"semvar": ">=1.0.0 <2"}}]}, "semvar"),
            ({"images": [{**entry, "password-file": str(tmp_path / "password")}]},
             "password-file"),
            ({"image": [entry]}, "image")):
        images = tmp_path / "images.yaml"
        images.write_text(yaml.safe_dump(document))
        result = _sync(upstream, tmp_path, "--file", str(images))
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        assert f"unknown key {key!r}" in result.stderr, result.stderr
    async with ecr_client(upstream.url) as ecr:
        with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
            await ecr.describe_repositories(repositoryNames=["misspelt/app"])
