"""The gateway as a registry mirror of real clients: containerd (hosts.toml, ``?ns=``
routing by upstream host, fallback to ``server``) and dockerd (``registry-mirrors``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.mirror.helpers import downloads, ecr_calls
from tests.support.clients import Containerd, Dockerd, free_port
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.images import OciImage, oci_layout
from tests.support.oci import OciClient

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
LAYERS = [MiB, 300]
# The gateway configuration the README's "Use as a containerd mirror" section shows.
MIRROR_CONFIG: dict[str, Any] = {
    "mirrors": {
        "docker.io": {"repository_prefix": "docker-hub"},
        "registry.example.com": {"repository_prefix": "example"},
    },
    "cache": {"tag_ttl_seconds": 60},
}


@pytest.fixture(scope="module")
def mirror(upstream: EmulatorProcess,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A node mirror: proxy mode with a local blob cache."""
    data = tmp_path_factory.mktemp("mirror")
    config = {**MIRROR_CONFIG, "blobs": {"mode": "proxy", "cache": {
        "path": str(data / "blob-cache"), "max_bytes": 1024**3}}}
    with GatewayProcess(data, config, upstream_url=upstream.url) as gw:
        yield gw


async def _push(registry_url: str, name: str, image: OciImage) -> None:
    """Push a layout's image through a registry (blob by blob, then the manifest)."""
    async with aiohttp.ClientSession() as session:
        client = OciClient(session, registry_url)
        for blob in image.blobs():
            await client.push_blob(name, blob.read())
        async with session.put(f"{registry_url}/v2/{name}/manifests/v1",
                               data=image.manifest_bytes,
                               headers={"Content-Type": image.manifest.media_type}) as r:
            assert r.status == 201, await r.text()


def _log_until(gw: GatewayProcess, mark: int, done: Callable[[list[dict[str, Any]]], bool],
               timeout: float = 5.0) -> list[dict[str, Any]]:
    """Access-log entries since ``mark``, once ``done`` holds (the log is read from stderr)."""
    deadline = time.monotonic() + timeout
    while True:
        entries = gw.access_log()[mark:]
        if done(entries) or time.monotonic() > deadline:
            return entries
        time.sleep(0.05)


def _fetch(ctd: Containerd, ref: str, *extra: str) -> None:
    ctd.ctr("content", "fetch", "--hosts-dir", str(ctd.hosts_dir), *extra, ref)


def _blob_reads(entries: list[dict[str, Any]], name: str) -> set[str]:
    return {e["path"].rsplit("/", 1)[1] for e in entries
            if e["repository"] == name and e["route"] == "end-2"
            and e["status"] in (200, 307)}


async def test_containerd_pulls_by_upstream_host(
        gateway: GatewayProcess, mirror: GatewayProcess, upstream: EmulatorProcess,
        containerd: Callable[[], Containerd], tmp_path: Path) -> None:
    """hosts.toml sends registry.example.com and docker.io through the gateway: each ns
    reaches its own ECR repositories, the bytes are identical, a cold fetch costs at most
    N+3 ECR calls and a second fetch from another node none at all."""
    app, hub_app = f"app-{uuid.uuid4().hex[:8]}", f"hub-{uuid.uuid4().hex[:8]}"
    example = oci_layout(tmp_path / "example", "v1", LAYERS)
    hub = oci_layout(tmp_path / "hub", "v1", LAYERS)
    # Pushed through another gateway, so that the mirror's caches start cold.
    await _push(gateway.url, f"example/team/{app}", example)
    await _push(gateway.url, f"docker-hub/library/{hub_app}", hub)

    dead = f"http://127.0.0.1:{free_port()}"  # a fallback that fails: the mirror must serve
    node = containerd()
    node.mirror("registry.example.com", mirror.url, dead)
    node.mirror("docker.io", mirror.url, dead)
    mark = len(mirror.access_log())
    upstream.clear_requests()
    _fetch(node, f"registry.example.com/team/{app}:v1")
    for blob in [example.manifest, *example.blobs()]:
        assert node.content(blob.digest) == blob.read(), blob.digest
    cold = ecr_calls(upstream, f"example/team/{app}")
    assert sum(cold.values()) <= len(LAYERS) + 3, cold

    node.ctr("images", "pull", "--hosts-dir", str(node.hosts_dir), "--snapshotter", "native",
             f"docker.io/library/{hub_app}:v1")
    table = node.ctr("images", "ls").stdout
    assert f"docker.io/library/{hub_app}:v1" in table and hub.digest in table, table
    for blob in hub.blobs():
        assert node.content(blob.digest) == blob.read(), blob.digest

    wanted = {b.digest for b in example.blobs()}
    entries = _log_until(mirror, mark, lambda es: wanted <= _blob_reads(es, f"team/{app}"))
    by_name = {f"team/{app}": "registry.example.com", f"library/{hub_app}": "docker.io"}
    mine = [e for e in entries if e["repository"] in by_name]
    assert {e["repository"] for e in mine} == set(by_name), entries
    assert all(e["ns"] == by_name[e["repository"]] for e in mine), mine
    assert all(e["status"] == 200 for e in mine), mine

    # Another node, same image, within the tag TTL: served from the gateway's caches.
    upstream.clear_requests()
    other = containerd()
    other.mirror("registry.example.com", mirror.url, dead)
    _fetch(other, f"registry.example.com/team/{app}:v1")
    for blob in example.blobs():
        assert other.content(blob.digest) == blob.read(), blob.digest
    assert ecr_calls(upstream) == {}
    assert downloads(upstream) == []


async def test_unmapped_host_falls_back_to_server(
        gateway: GatewayProcess, mirror: GatewayProcess,
        containerd: Callable[[], Containerd], tmp_path: Path) -> None:
    """The mirror is configured for docker.io and registry.example.com only: for
    other.example.com it answers NAME_UNKNOWN at once, with no ECR call, and containerd
    moves on to the hosts.toml ``server`` (here a plain registry: a gateway without mirrors,
    which ignores ns). containerd sends ns to every host whose address differs from the
    image's registry, the server included."""
    name = f"fallback/{uuid.uuid4().hex[:8]}"
    image = oci_layout(tmp_path / "img", "v1", LAYERS)
    await _push(gateway.url, name, image)
    node = containerd()
    node.mirror("other.example.com", mirror.url, gateway.url)
    mirror_mark, server_mark = len(mirror.access_log()), len(gateway.access_log())
    _fetch(node, f"other.example.com/{name}:v1")
    for blob in [image.manifest, *image.blobs()]:
        assert node.content(blob.digest) == blob.read(), blob.digest

    wanted = {b.digest for b in image.blobs()}
    served = [e for e in _log_until(gateway, server_mark,
                                    lambda es: wanted <= _blob_reads(es, name))
              if e["repository"] == name]
    assert wanted <= _blob_reads(served, name), served
    assert all(e["status"] in (200, 307) and e["ns"] == "other.example.com"
               for e in served), served
    refused = [e for e in mirror.access_log()[mirror_mark:] if e["repository"] == name]
    assert refused, "containerd did not try the mirror first"
    assert all(e["status"] == 404 and e["ns"] == "other.example.com"
               and e["upstream_calls"] == 0 for e in refused), refused


async def test_dockerd_registry_mirror_serves_docker_io(
        gateway: GatewayProcess, upstream: EmulatorProcess, tmp_path: Path) -> None:
    """dockerd with the gateway in registry-mirrors pulls docker.io images through it.
    Docker sends no ns, so the default route carries the pull-through prefix."""
    app = f"hub-{uuid.uuid4().hex[:8]}"
    image = oci_layout(tmp_path / "img", "v1", LAYERS)
    await _push(gateway.url, f"docker-hub/library/{app}", image)
    config = {"routes": [{"prefix": "", "repository_prefix": "docker-hub",
                          "create_on_push": False}]}
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as hub_mirror:
        daemon = Dockerd(registry_mirrors=[hub_mirror.url])
        daemon.start()
        try:
            docker = daemon.client(tmp_path / "docker-config")
            docker("pull", f"{app}:v1")
            image_id = docker("image", "inspect", "--format", "{{.Id}}", f"{app}:v1").stdout
            assert image_id.strip() == image.config.digest
        finally:
            daemon.stop()
        entries = [e for e in hub_mirror.access_log() if e["repository"] == f"library/{app}"]
        assert entries and all(e["ns"] is None for e in entries), entries
        assert {e["status"] for e in entries} <= {200, 307}, entries
        reads = {e["path"].rsplit("/", 1)[1] for e in entries if e["route"] == "end-2"}
        assert {layer.digest for layer in image.layers} <= reads, entries
