"""Restarting the gateway, then the emulator, loses no image."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest

from tests.e2e.helpers import get_manifest, get_tags
from tests.support.clients import Skopeo
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.images import (
    OciImage,
    OciIndex,
    layout_blob,
    layout_ref,
    oci_index_layout,
    oci_layout,
)

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def _pull_and_compare(skopeo: Skopeo, gateway: GatewayProcess, repo: str, out: Path,
                      single: OciImage, index: OciIndex) -> None:
    assert get_tags(gateway.url, repo) == ["multi", "one", "v2s2"]
    assert get_manifest(gateway.url, repo, "one")[2] == single.manifest_bytes
    assert get_manifest(gateway.url, repo, "multi")[2] == index.index_bytes

    skopeo.copy(f"docker://{gateway.host}/{repo}:one", f"oci:{out}:one")
    skopeo.copy(f"docker://{gateway.host}/{repo}:multi", f"oci:{out}:multi", "--all")
    skopeo.copy(f"docker://{gateway.host}/{repo}:v2s2", f"oci:{out}:v2s2")
    assert layout_ref(out, "one")["digest"] == single.digest
    assert layout_ref(out, "multi")["digest"] == index.digest
    converted = json.loads(layout_blob(out, str(layout_ref(out, "v2s2")["digest"])).read_bytes())
    assert [layer["digest"] for layer in converted["layers"]] == [
        layer.digest for layer in single.layers]
    for image in (single, *index.images):
        assert layout_blob(out, image.digest).read_bytes() == image.manifest_bytes
        for blob in image.blobs():
            assert filecmp.cmp(layout_blob(out, blob.digest), blob.path, shallow=False)


def test_images_survive_gateway_and_emulator_restarts(
        gateway: GatewayProcess, upstream: EmulatorProcess, repo: str, skopeo: Skopeo,
        tmp_path: Path) -> None:
    single = oci_layout(tmp_path / "single", "one", [11 * MiB, 700])
    index = oci_index_layout(tmp_path / "index", "multi", [2000])
    skopeo.copy(f"oci:{tmp_path / 'single'}:one", f"docker://{gateway.host}/{repo}:one")
    skopeo.copy(f"oci:{tmp_path / 'single'}:one", f"docker://{gateway.host}/{repo}:v2s2",
                "-f", "v2s2")
    skopeo.copy(f"oci:{tmp_path / 'index'}:multi", f"docker://{gateway.host}/{repo}:multi",
                "--all")
    _pull_and_compare(skopeo, gateway, repo, tmp_path / "before", single, index)

    gateway_url = gateway.url
    gateway.restart()
    assert gateway.url == gateway_url
    _pull_and_compare(skopeo, gateway, repo, tmp_path / "after-gateway", single, index)

    upstream_url = upstream.url
    upstream.restart()
    if upstream.url != upstream_url:
        # The emulator came back elsewhere: point the gateway at it.
        gateway.config["upstream"]["endpoint_url"] = upstream.url
        gateway.restart()
    _pull_and_compare(skopeo, gateway, repo, tmp_path / "after-emulator", single, index)

    gateway.restart()
    _pull_and_compare(skopeo, gateway, repo, tmp_path / "after-both", single, index)
