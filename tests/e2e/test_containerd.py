"""containerd pushes to the gateway and pulls back through it as a registry mirror."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import get_manifest
from tests.support.clients import Containerd, free_port
from tests.support.gateway import GatewayProcess
from tests.support.images import OCI_MANIFEST, oci_archive, oci_layout

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
UPSTREAM = "registry.example.com"


def _entries_since(gateway: GatewayProcess, mark: int, done: Callable[[list[dict[str, Any]]],
                   bool], timeout: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        entries = gateway.access_log()[mark:]
        if done(entries) or time.monotonic() > deadline:
            return entries
        time.sleep(0.1)


def test_ctr_push_then_pull_through_mirror(gateway: GatewayProcess, repo: str,
                                           containerd: Callable[[], Containerd],
                                           tmp_path: Path) -> None:
    """ctr pushes (POST + one PUT per blob); a second containerd, configured with the gateway
    as the mirror of registry.example.com, fetches and pulls the image back; every mirror
    request carries ns=registry.example.com and the default route serves the name as is."""
    image = oci_layout(tmp_path / "src", "v1", [6 * MiB, 300])
    archive = oci_archive(tmp_path / "src", tmp_path / "image.tar")
    name = f"{gateway.host}/{repo}"

    pusher = containerd()
    pusher.ctr("images", "import", "--no-unpack", "--base-name", name, str(archive))
    listed = pusher.ctr("images", "ls", "-q").stdout.split()
    assert f"{name}:v1" in listed, listed
    mark = len(gateway.access_log())
    pusher.ctr("images", "push", "--plain-http", f"{name}:v1")

    content_type, digest, body = get_manifest(gateway.url, repo, "v1")
    assert (content_type, digest, body) == (OCI_MANIFEST, image.digest, image.manifest_bytes)
    def uploads(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in entries if e.get("repository") == repo and e["route"] == "end-5"]

    # containerd uploads each blob as POST then a single PUT with the whole body.
    pushed = uploads(_entries_since(gateway, mark, lambda es: len(uploads(es)) >= 3))
    assert len(pushed) == 3, pushed
    assert all(e["method"] == "PUT" and e["status"] == 201 for e in pushed), pushed

    puller = containerd()
    dead = free_port()
    puller.mirror(UPSTREAM, gateway.url, f"http://127.0.0.1:{dead}")
    ref = f"{UPSTREAM}/{repo}:v1"
    mark = len(gateway.access_log())
    puller.ctr("content", "fetch", "--hosts-dir", str(puller.hosts_dir), ref)
    for blob in [image.manifest, *image.blobs()]:
        assert puller.content(blob.digest) == blob.read(), blob.digest

    puller.ctr("images", "pull", "--hosts-dir", str(puller.hosts_dir),
               "--snapshotter", "native", ref)
    table = puller.ctr("images", "ls").stdout
    assert ref in table and image.digest in table, table

    def complete(entries: list[dict[str, Any]]) -> bool:
        blob_reads = {e["path"].rsplit("/", 1)[1] for e in entries
                      if e["route"] == "end-2" and e["method"] == "GET"}
        return all(b.digest in blob_reads for b in image.blobs())

    entries = [e for e in _entries_since(gateway, mark, complete)
               if e.get("repository") == repo]
    assert entries, "the mirror pull did not reach the gateway"
    assert all(e["ns"] == UPSTREAM for e in entries), entries
    assert all(e["status"] in (200, 307) for e in entries), entries
    kinds = {(e["method"], e["route"]) for e in entries}
    assert {("HEAD", "end-3"), ("GET", "end-3"), ("GET", "end-2")} <= kinds, kinds
    assert complete(entries), entries
    manifest_gets = [e for e in entries if e["route"] == "end-3" and e["method"] == "GET"]
    assert any(e["path"].endswith(image.digest) for e in manifest_gets), manifest_gets
