"""What PutImage reads from a manifest."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ecr_emulator import manifests
from ecr_emulator.errors import AwsError

D = ["sha256:" + c * 64 for c in "abcdef"]


def oci(**extra: Any) -> dict[str, Any]:
    doc = {"schemaVersion": 2, "mediaType": manifests.OCI_MANIFEST,
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D[0],
                      "size": 2},
           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": D[1], "size": 10},
                      {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                       "digest": D[2], "size": 5, "urls": ["https://example.com/l"]}]}
    doc.update(extra)
    return doc


def test_image_manifest() -> None:
    parsed = manifests.parse(json.dumps(oci(
        artifactType="application/x.test", annotations={"a": "b", "n": 1},
        subject={"mediaType": manifests.OCI_MANIFEST, "digest": D[3], "size": 1})), None)
    assert parsed.media_type == manifests.OCI_MANIFEST
    assert [b.digest for b in parsed.blobs] == D[:3]
    assert [b.distributable for b in parsed.blobs] == [True, True, False]
    assert parsed.config_media_type == "application/vnd.oci.image.config.v1+json"
    assert parsed.artifact_type == "application/x.test"
    assert parsed.subject == D[3]
    assert parsed.annotations == {"a": "b"}
    assert not parsed.is_index


def test_media_type_from_parameter() -> None:
    doc = oci()
    del doc["mediaType"]
    assert manifests.parse(json.dumps(doc), manifests.OCI_MANIFEST).media_type == \
        manifests.OCI_MANIFEST


def test_index() -> None:
    doc = {"schemaVersion": 2, "mediaType": manifests.DOCKER_LIST, "manifests": [
        {"mediaType": manifests.DOCKER_V2, "digest": d, "size": 1} for d in (D[0], D[1], D[0])]}
    parsed = manifests.parse(json.dumps(doc), None)
    assert parsed.is_index and parsed.children == (D[0], D[1]) and parsed.blobs == ()


def test_schema1() -> None:
    doc = {"schemaVersion": 1, "name": "a", "tag": "b",
           "fsLayers": [{"blobSum": D[0]}, {"blobSum": D[1]}, {"blobSum": D[0]}]}
    parsed = manifests.parse(json.dumps(doc), manifests.DOCKER_V1_SIGNED)
    assert [b.digest for b in parsed.blobs] == [D[0], D[1]]


@pytest.mark.parametrize(("text", "media_type", "fragment"), [
    ("{", None, "Invalid JSON"),
    ("[]", None, "JSON object"),
    (json.dumps({"schemaVersion": 2}), None, "not provided"),
    (json.dumps(oci()), manifests.OCI_INDEX, "does not match"),
    (json.dumps(oci(mediaType="application/x-unknown")), None, "Unsupported"),
    (json.dumps(oci(schemaVersion=1)), None, "schemaVersion"),
    (json.dumps(oci(layers="no")), None, "layers must be a list"),
    (json.dumps(oci(config={"digest": "nope"})), None, "config.digest"),
    (json.dumps(oci(config={"digest": D[0], "size": -1})), None, "config.size"),
    # Past an int64 (SQLite's INTEGER, where a pull through cache stores it), and values
    # Python's == takes for an integer.
    (json.dumps(oci(config={"digest": D[0], "size": 2**63})), None, "config.size"),
    (json.dumps(oci(layers=[{"digest": D[1], "size": 2**62}, {"digest": D[2], "size": 2**62}])),
     None, "add up to more than a 64-bit integer"),
    (json.dumps(oci(schemaVersion=2.0)), None, "schemaVersion must be 2"),
    (json.dumps({"schemaVersion": True, "fsLayers": [{"blobSum": D[0]}]}),
     manifests.DOCKER_V1_SIGNED, "schemaVersion must be 1"),
    (json.dumps({"schemaVersion": 2, "mediaType": manifests.OCI_INDEX, "manifests": [{}]}),
     None, "manifests[0].digest"),
])
def test_invalid(text: str, media_type: str | None, fragment: str) -> None:
    with pytest.raises(AwsError) as info:
        manifests.parse(text, media_type)
    assert info.value.name == "InvalidParameterException"
    assert fragment in info.value.message
