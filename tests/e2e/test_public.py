"""Real clients on ECR Public through the gateway, and a lifecycle policy at work:

* skopeo pushes an OCI layout to an ECR Public route and pulls it back byte-identical;
  skopeo also pulls it straight from the emulator's public registry endpoint (anonymous
  token flow), as it would from public.ecr.aws;
* containerd pulls ``public.ecr.aws/<alias>/<name>`` with the gateway as its mirror;
* a "keep the last 3 images" lifecycle policy, applied after 5 pushes, leaves exactly the 3
  newest, and the gateway's tag list and pulls show it.
"""

from __future__ import annotations

import filecmp
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.emulator.extra.helpers import ALIAS, keep_last, lifecycle, run_lifecycle
from tests.support.clients import CommandFailed, Containerd, Skopeo, free_port
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.images import OciImage, layout_blob, layout_ref, oci_layout

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def public_gateway(upstream: EmulatorProcess,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config: dict[str, Any] = {
        "routes": [
            {"prefix": "pub", "upstream_kind": "ecr-public", "registry_url": upstream.url},
            {"prefix": "", "repository": {"lifecycle_policy": lifecycle(keep_last(3))}},
        ],
        "mirrors": {"public.ecr.aws": {"registry_url": upstream.url}},
        "cache": {"tag_ttl_seconds": 0},
    }
    with GatewayProcess(tmp_path_factory.mktemp("gw-e2e-public"), config,
                        upstream_url=upstream.url) as gw:
        yield gw


def uid() -> str:
    return uuid.uuid4().hex[:10]


def assert_same_image(image: OciImage, layout: Path, tag: str) -> None:
    assert layout_ref(layout, tag)["digest"] == image.digest
    for blob in [image.manifest, *image.blobs()]:
        assert filecmp.cmp(layout_blob(layout, blob.digest), blob.path, shallow=False)


def test_skopeo_pushes_to_ecr_public_and_pulls_back(
        public_gateway: GatewayProcess, upstream: EmulatorProcess, skopeo: Skopeo,
        tmp_path: Path) -> None:
    app = f"app-{uid()}"
    image = oci_layout(tmp_path / "src", "v1", [2 * MiB, 4096])
    remote = f"docker://{public_gateway.host}/pub/{app}:v1"
    skopeo.copy(f"oci:{tmp_path / 'src'}:v1", remote)
    skopeo.copy(remote, f"oci:{tmp_path / 'back'}:v1")
    assert_same_image(image, tmp_path / "back", "v1")
    assert skopeo.list_tags(f"docker://{public_gateway.host}/pub/{app}") == ["v1"]
    pushed = {e["action"] for e in upstream.requests() if e.get("repository") == app}
    assert {"ecr-public:PutImage", "ecr-public:RegistryManifest"} <= pushed

    # The emulator's registry endpoint is a registry skopeo pulls from by itself.
    direct = f"docker://{upstream.url.split('://', 1)[1]}/{ALIAS}/{app}:v1"
    assert skopeo.inspect_json(direct)["Digest"] == image.digest
    skopeo.copy(direct, f"oci:{tmp_path / 'direct'}:v1")
    assert_same_image(image, tmp_path / "direct", "v1")


def test_containerd_pulls_public_ecr_aws_through_the_gateway(
        public_gateway: GatewayProcess, upstream: EmulatorProcess, skopeo: Skopeo,
        containerd: Callable[[], Containerd], tmp_path: Path) -> None:
    app = f"mirrored-{uid()}"
    image = oci_layout(tmp_path / "src", "v1", [MiB, 512])
    skopeo.copy(f"oci:{tmp_path / 'src'}:v1", f"docker://{public_gateway.host}/pub/{app}:v1")
    node = containerd()
    node.mirror("public.ecr.aws", public_gateway.url, f"http://127.0.0.1:{free_port()}")
    ref = f"public.ecr.aws/{ALIAS}/{app}:v1"
    node.ctr("images", "pull", "--hosts-dir", str(node.hosts_dir), "--snapshotter", "native",
             ref)
    table = node.ctr("images", "ls").stdout
    assert ref in table and image.digest in table, table
    for blob in [image.manifest, *image.blobs()]:
        assert node.content(blob.digest) == blob.read(), blob.digest
    mine = [e for e in public_gateway.access_log() if e["repository"] == f"{ALIAS}/{app}"]
    assert mine and all(e["ns"] == "public.ecr.aws" and e["status"] in (200, 307)
                        for e in mine), mine

    # containerd also pulls straight from the emulator's registry endpoint (token flow).
    host = upstream.url.split("://", 1)[1]
    node.mirror(host, upstream.url, upstream.url)
    node.ctr("content", "fetch", "--hosts-dir", str(node.hosts_dir),
             f"{host}/{ALIAS}/{app}:v1")
    assert any(e["token"] == "anonymous" for e in upstream.requests(
        "ecr-public:RegistryManifest") if e["repository"] == app)


async def test_lifecycle_keeps_the_three_newest(
        public_gateway: GatewayProcess, upstream: EmulatorProcess, skopeo: Skopeo,
        tmp_path: Path) -> None:
    """create_on_push gave the repository the route's "keep the last 3 images" policy; after
    5 pushes a lifecycle run expires v1 and v2, and the gateway no longer serves them (by
    tag; a by-digest read may still be answered from the gateway's cache of immutable
    manifests, gateway/ecr/caches.py)."""
    repo = f"lc/{uid()}"
    images = {}
    for n in range(1, 6):
        layout = tmp_path / f"v{n}"
        images[n] = oci_layout(layout, f"v{n}", [1024 + n])
        skopeo.copy(f"oci:{layout}:v{n}", f"docker://{public_gateway.host}/{repo}:v{n}")
    expired = await run_lifecycle(upstream.url, repo)
    assert [e["imageTags"] for e in expired[repo]] == [["v1"], ["v2"]]
    assert [e["imageDigest"] for e in expired[repo]] == [images[1].digest, images[2].digest]
    remote = f"docker://{public_gateway.host}/{repo}"
    assert skopeo.list_tags(remote) == ["v3", "v4", "v5"]
    for n in (1, 2):
        with pytest.raises(CommandFailed) as info:
            skopeo.inspect(f"{remote}:v{n}")
        assert "manifest unknown" in str(info.value).lower()
    async with aiohttp.ClientSession() as session, session.head(
            f"{public_gateway.url}/v2/{repo}/manifests/v2") as r:
        assert r.status == 404
    for n in (3, 5):
        skopeo.copy(f"{remote}:v{n}", f"oci:{tmp_path / f'back{n}'}:v{n}")
        assert_same_image(images[n], tmp_path / f"back{n}", f"v{n}")
