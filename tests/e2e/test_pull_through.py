"""containerd pulls docker.io images through the gateway's pull-through: a real distribution
stands in for Docker Hub. The first node's pull fills ECR; with the upstream stopped, a
second node still pulls the same bytes, from ECR."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.services import ReferenceRegistry
from tests.e2e.test_mirror import _push
from tests.integration.mirror.helpers import ecr_image
from tests.integration.mirror.test_pull_through import _until_stored
from tests.support.clients import Containerd, free_port
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.images import OciImage, oci_layout

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


async def test_containerd_pull_through_fills_ecr_and_survives_the_upstream(
        upstream: EmulatorProcess, containerd: Callable[[], Containerd],
        tmp_path: Path) -> None:
    name = f"library/pt-{uuid.uuid4().hex[:8]}"
    image = oci_layout(tmp_path / "img", "v1", [3 * MiB, 4096])
    hub = ReferenceRegistry(tmp_path / "hub").start()
    config = {"mirrors": {"docker.io": {"repository_prefix": "docker-hub",
                                        "upstream": {"url": hub.url}}},
              "blobs": {"mode": "proxy"}}
    dead = f"http://127.0.0.1:{free_port()}"  # a fallback that fails: the gateway must serve
    try:
        await _push(hub.url, name, image)
        with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
            first = containerd()
            first.mirror("docker.io", gw.url, dead)
            first.ctr("images", "pull", "--hosts-dir", str(first.hosts_dir), "--snapshotter",
                      "native", f"docker.io/{name}:v1")
            for blob in [image.manifest, *image.blobs()]:
                assert first.content(blob.digest) == blob.read(), blob.digest
            stored = await ecr_image(upstream, f"docker-hub/{name}", "v1")
            assert stored["imageManifest"].encode() == image.manifest_bytes
    finally:
        hub.stop()
    # Another node, another gateway process (cold caches), the upstream gone.
    with GatewayProcess(tmp_path / "gw2", config, upstream_url=upstream.url) as gw:
        _fetch_and_check(containerd(), gw.url, dead, name, image)


def _fetch_and_check(node: Containerd, gateway: str, fallback: str, name: str,
                     image: OciImage) -> None:
    """``ctr content fetch`` of docker.io/<name>:v1 through the gateway: byte for byte."""
    node.mirror("docker.io", gateway, fallback)
    node.ctr("content", "fetch", "--hosts-dir", str(node.hosts_dir), f"docker.io/{name}:v1")
    for blob in [image.manifest, *image.blobs()]:
        assert node.content(blob.digest) == blob.read(), blob.digest


async def test_a_node_local_mirror_serves_what_it_filled_from_its_own_disk(
        upstream: EmulatorProcess, containerd: Callable[[], Containerd],
        tmp_path: Path) -> None:
    """Proxy mode with a blob cache, as a node-local mirror runs: once the first pull has
    filled ECR, another containerd on the node pulls the image with the upstream gone and
    without a single ECR call or download: the fill left every blob in the cache."""
    name = f"library/local-{uuid.uuid4().hex[:8]}"
    image = oci_layout(tmp_path / "img", "v1", [3 * MiB, 4096])
    hub = ReferenceRegistry(tmp_path / "hub").start()
    config = {"mirrors": {"docker.io": {"repository_prefix": "docker-hub",
                                        "upstream": {"url": hub.url}}},
              "blobs": {"mode": "proxy", "cache": {"path": str(tmp_path / "cache")}}}
    dead = f"http://127.0.0.1:{free_port()}"
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
        try:
            await _push(hub.url, name, image)
            _fetch_and_check(containerd(), gw.url, dead, name, image)
            await _until_stored(gw, f"docker.io/{name}:v1: stored in ECR as {image.digest}")
        finally:
            hub.stop()
        upstream.clear_requests()
        _fetch_and_check(containerd(), gw.url, dead, name, image)
        assert [r["action"] for r in upstream.requests()] == []
