"""skopeo copies OCI layouts to the gateway and back, inspects, lists and deletes."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest

from tests.e2e.helpers import get_manifest
from tests.support.clients import CommandFailed, Skopeo
from tests.support.gateway import GatewayProcess
from tests.support.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    layout_blob,
    layout_ref,
    oci_index_layout,
    oci_layout,
    sha256_bytes,
    sha256_file,
)

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def assert_blobs_identical(blobs: list[Blob], layout: Path) -> None:
    """Every blob is in ``layout`` under its digest, with exactly the original bytes."""
    for blob in blobs:
        copy = layout_blob(layout, blob.digest)
        assert copy.exists(), f"{blob.digest} ({blob.media_type}) missing from {layout}"
        assert sha256_file(copy) == blob.digest
        assert filecmp.cmp(copy, blob.path, shallow=False), blob.digest


def manifest_of(layout: Path, tag: str) -> tuple[dict[str, object], bytes]:
    descriptor = layout_ref(layout, tag)
    body = layout_blob(layout, str(descriptor["digest"])).read_bytes()
    assert sha256_bytes(body) == descriptor["digest"]
    return descriptor, body


def test_oci_layout_round_trip_is_byte_identical(gateway: GatewayProcess, repo: str,
                                                 skopeo: Skopeo, tmp_path: Path) -> None:
    """oci: → docker:// → oci: keeps the manifest, config and layers byte for byte; a 12 MiB
    layer crosses ECR's 10 MiB part size, so it is stored as two parts."""
    image = oci_layout(tmp_path / "src", "v1", [12 * MiB, 2048])
    remote = f"docker://{gateway.host}/{repo}:v1"
    skopeo.copy(f"oci:{tmp_path / 'src'}:v1", remote)

    # The registry serves exactly the pushed manifest, by tag and by digest.
    content_type, digest, body = get_manifest(gateway.url, repo, "v1")
    assert (content_type, digest, body) == (OCI_MANIFEST, image.digest, image.manifest_bytes)
    assert get_manifest(gateway.url, repo, image.digest)[2] == image.manifest_bytes
    assert skopeo.raw_manifest(remote) == image.manifest_bytes

    info = skopeo.inspect_json(remote)
    assert info["Digest"] == image.digest
    assert info["Layers"] == [layer.digest for layer in image.layers]
    assert (info["Os"], info["Architecture"]) == ("linux", "amd64")
    config = skopeo.inspect_json(remote, "--config")
    assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in image.layers]

    out = tmp_path / "out"
    skopeo.copy(remote, f"oci:{out}:v1")
    descriptor, body = manifest_of(out, "v1")
    assert descriptor["digest"] == image.digest
    assert body == image.manifest_bytes
    assert_blobs_identical(image.blobs(), out)


def test_list_tags_is_sorted(gateway: GatewayProcess, repo: str, skopeo: Skopeo,
                             tmp_path: Path) -> None:
    oci_layout(tmp_path / "src", "v1", [512])
    tags = ["v10", "latest", "b", "v2", "A-1", "a_0"]
    for tag in tags:
        skopeo.copy(f"oci:{tmp_path / 'src'}:v1", f"docker://{gateway.host}/{repo}:{tag}")
    listed = skopeo.list_tags(f"docker://{gateway.host}/{repo}")
    assert listed == sorted(tags)
    assert listed != tags


def test_delete_removes_the_tag(gateway: GatewayProcess, repo: str, skopeo: Skopeo,
                                tmp_path: Path) -> None:
    image = oci_layout(tmp_path / "src", "v1", [4096])
    keep = oci_layout(tmp_path / "other", "v1", [4096])
    skopeo.copy(f"oci:{tmp_path / 'src'}:v1", f"docker://{gateway.host}/{repo}:gone")
    skopeo.copy(f"oci:{tmp_path / 'other'}:v1", f"docker://{gateway.host}/{repo}:kept")
    remote = f"docker://{gateway.host}/{repo}:gone"
    assert skopeo.inspect_json(remote)["Digest"] == image.digest

    skopeo.delete(remote)

    failed = skopeo.inspect(remote, check=False)
    assert failed.returncode != 0, failed.stdout
    assert "manifest unknown" in failed.stderr.lower(), failed.stderr
    assert skopeo.list_tags(f"docker://{gateway.host}/{repo}") == ["kept"]
    by_digest = skopeo.inspect(f"docker://{gateway.host}/{repo}@{image.digest}", check=False)
    assert by_digest.returncode != 0, "the image itself should be gone, not only its tag"
    # The other image of the repository is untouched.
    assert skopeo.inspect_json(f"docker://{gateway.host}/{repo}:kept")["Digest"] == keep.digest


def test_copy_as_oci_and_as_docker_v2s2(gateway: GatewayProcess, repo: str, skopeo: Skopeo,
                                        tmp_path: Path) -> None:
    """-f oci keeps the OCI manifest; -f v2s2 converts media types but not a single blob."""
    image = oci_layout(tmp_path / "src", "v1", [6 * MiB, 100])
    source = f"oci:{tmp_path / 'src'}:v1"
    skopeo.copy(source, f"docker://{gateway.host}/{repo}:oci", "-f", "oci")
    skopeo.copy(source, f"docker://{gateway.host}/{repo}:v2s2", "-f", "v2s2")

    oci_type, oci_digest, oci_body = get_manifest(gateway.url, repo, "oci")
    assert (oci_type, oci_digest, oci_body) == (OCI_MANIFEST, image.digest, image.manifest_bytes)

    s2_type, s2_digest, s2_body = get_manifest(gateway.url, repo, "v2s2")
    assert s2_type == DOCKER_MANIFEST
    assert s2_digest == sha256_bytes(s2_body) != image.digest
    s2 = json.loads(s2_body)
    assert s2["mediaType"] == DOCKER_MANIFEST
    assert s2["config"]["mediaType"] == DOCKER_CONFIG
    assert s2["config"]["digest"] == image.config.digest
    assert [(layer["mediaType"], layer["digest"], layer["size"]) for layer in s2["layers"]] == [
        (DOCKER_LAYER_GZIP, layer.digest, layer.size) for layer in image.layers]
    assert skopeo.raw_manifest(f"docker://{gateway.host}/{repo}:v2s2") == s2_body

    # Back out of the v2s2 image: skopeo converts the manifest (and re-serialises the
    # config into OCI form), the layers stay byte for byte the same.
    out = tmp_path / "out"
    skopeo.copy(f"docker://{gateway.host}/{repo}:v2s2", f"oci:{out}:back")
    _, body = manifest_of(out, "back")
    back = json.loads(body)
    assert back["layers"] == [layer.descriptor() for layer in image.layers]
    assert_blobs_identical(list(image.layers), out)
    config = json.loads(layout_blob(out, back["config"]["digest"]).read_bytes())
    assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in image.layers]


def test_image_index_with_two_platforms(gateway: GatewayProcess, repo: str, skopeo: Skopeo,
                                        tmp_path: Path) -> None:
    """copy --all pushes the index and both platform images; copy --all brings all back."""
    index = oci_index_layout(tmp_path / "src", "multi", [3000, 200])
    remote = f"docker://{gateway.host}/{repo}:multi"
    skopeo.copy(f"oci:{tmp_path / 'src'}:multi", remote, "--all")

    content_type, digest, body = get_manifest(gateway.url, repo, "multi")
    assert (content_type, digest, body) == (OCI_INDEX, index.digest, index.index_bytes)
    assert skopeo.raw_manifest(remote) == index.index_bytes
    for image in index.images:
        by_digest = f"docker://{gateway.host}/{repo}@{image.digest}"
        assert skopeo.raw_manifest(by_digest) == image.manifest_bytes
        arch = image.platform["architecture"]
        chosen = skopeo.inspect_platform(remote, "linux", arch)
        assert chosen["Architecture"] == arch
        assert chosen["Layers"] == [layer.digest for layer in image.layers], arch

    out = tmp_path / "out"
    skopeo.copy(remote, f"oci:{out}:multi", "--all")
    descriptor, body = manifest_of(out, "multi")
    assert descriptor["digest"] == index.digest
    assert body == index.index_bytes
    children = json.loads(body)["manifests"]
    assert [(c["platform"]["os"], c["platform"]["architecture"]) for c in children] == [
        ("linux", "amd64"), ("linux", "arm64")]
    for image in index.images:
        assert layout_blob(out, image.digest).read_bytes() == image.manifest_bytes
        assert_blobs_identical(image.blobs(), out)


def test_missing_repository_and_tag_are_reported(gateway: GatewayProcess, repo: str,
                                                 skopeo: Skopeo, tmp_path: Path) -> None:
    """Copies from a repository or a tag that does not exist fail with the registry's OCI
    error (NAME_UNKNOWN, MANIFEST_UNKNOWN), shown to the user by skopeo."""
    with pytest.raises(CommandFailed, match=r"(?i)name unknown"):
        skopeo.copy(f"docker://{gateway.host}/{repo}:nope", f"oci:{tmp_path / 'out'}:x")
    oci_layout(tmp_path / "src", "v1", [256])
    skopeo.copy(f"oci:{tmp_path / 'src'}:v1", f"docker://{gateway.host}/{repo}:v1")
    with pytest.raises(CommandFailed, match=r"(?i)manifest unknown"):
        skopeo.copy(f"docker://{gateway.host}/{repo}:nope", f"oci:{tmp_path / 'out'}:x")
