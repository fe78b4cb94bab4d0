"""The protocol surface's parsers refuse bad input with the spec's error codes."""

from __future__ import annotations

import json

import pytest

from gateway.oci.digests import parse_digest
from gateway.oci.errors import OciError
from gateway.oci.mediatypes import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, parse_manifest
from gateway.oci.names import check_name, check_tag
from gateway.oci.ranges import forwarded_range, parse_content_range, parse_read_range
from gateway.oci.routes import match

D = "sha256:" + "a" * 64


@pytest.mark.parametrize("name", ["a", "library/nginx", "a.b_c__d-e/f--g", "x/" * 20 + "y"])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "a/../b", "a//b", "-a", "a-", "a/", "a%2fb",
                                  "a\x00b", "ä", "a" * 256, "a..b", "a/.b"])
def test_bad_names(name: str) -> None:
    with pytest.raises(OciError) as caught:
        check_name(name)
    assert caught.value.error.code == "NAME_INVALID" and caught.value.status == 400


@pytest.mark.parametrize("tag,ok", [("latest", True), ("v1.0_rc-1", True), ("_x", True),
                                    (".x", False), ("-x", False), ("a" * 128, True),
                                    ("a" * 129, False), ("a:b", False), ("", False)])
def test_tags(tag: str, ok: bool) -> None:
    if ok:
        assert check_tag(tag) == tag
    else:
        with pytest.raises(OciError):
            check_tag(tag)


@pytest.mark.parametrize("digest,ok", [(D, True), ("sha512:" + "b" * 128, True),
                                       ("sha256:" + "A" * 64, False), ("sha256:abc", False),
                                       ("md5:" + "a" * 32, False), ("sha256" + "a" * 64, False),
                                       ("sha256:" + "g" * 64, False)])
def test_digests(digest: str, ok: bool) -> None:
    if ok:
        assert str(parse_digest(digest)) == digest
    else:
        with pytest.raises(OciError) as caught:
            parse_digest(digest)
        assert caught.value.error.code == "DIGEST_INVALID"


def test_content_range() -> None:
    assert parse_content_range("0-1023") == (0, 1023)
    assert parse_content_range("bytes 10-20") == (10, 20)
    for bad in ("", "5-4", "-1-3", "a-b", "1-", "0-99999999999999999999"):
        with pytest.raises(OciError) as caught:
            parse_content_range(bad)
        assert caught.value.status == 416


def test_read_range() -> None:
    assert parse_read_range("bytes=0-9", 100) == (0, 9)
    assert parse_read_range("bytes=90-", 100) == (90, 99)
    assert parse_read_range("bytes=-10", 100) == (90, 99)
    assert parse_read_range("bytes=0-1000", 100) == (0, 99)
    assert parse_read_range("items=0-1", 100) is None
    with pytest.raises(OciError) as caught:
        parse_read_range("bytes=100-", 100)
    assert caught.value.status == 416


def test_a_range_forwarded_for_a_blob_of_unknown_size_reads_as_a_local_file_would() -> None:
    # Storage sizes unknown: the Range goes to it normalized. A suffix of no bytes selects
    # nothing (RFC 9110 14.1.1); a server that reads it as "from byte 0" (aiohttp's files)
    # would send the whole blob with 206, where a local file answers 416.
    never = forwarded_range("bytes=99999999999999999999-", -1)
    for nothing in ("bytes=-0", "bytes=-000", "bytes= -0"):
        assert forwarded_range(nothing, -1) == never, nothing
        with pytest.raises(OciError):
            parse_read_range(nothing, 100)
    assert forwarded_range("bytes=-10", -1) == "bytes=-10"
    assert forwarded_range("bytes=-010", -1) == "bytes=-010"


def manifest(**extra: object) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D,
                      "size": 2},
           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": D,
                       "size": 3}]}
    doc.update(extra)
    return json.dumps(doc).encode()


def test_manifest_parsed() -> None:
    parsed = parse_manifest(manifest(), OCI_MANIFEST)
    assert parsed.media_type == OCI_MANIFEST and len(parsed.blobs) == 2


def test_manifest_media_type_from_field_or_content_type_only() -> None:
    body = json.loads(manifest())
    del body["mediaType"]
    assert parse_manifest(json.dumps(body).encode(), OCI_MANIFEST).media_type == OCI_MANIFEST
    index = {"schemaVersion": 2, "manifests": []}
    assert parse_manifest(json.dumps(index).encode(), OCI_INDEX).media_type == OCI_INDEX
    for doc in (body, index):  # neither says what the document is
        with pytest.raises(OciError) as refused:
            parse_manifest(json.dumps(doc).encode(), None)
        assert refused.value.error.code == "MANIFEST_INVALID"


@pytest.mark.parametrize("doc,content_type", [
    ({"schemaVersion": 2, "manifests": []}, OCI_MANIFEST),  # an index sent as an image
    ({"schemaVersion": 2, "config": {"mediaType": "a/b", "digest": D, "size": 1},
      "manifests": []}, OCI_INDEX),
    ({"schemaVersion": 2, "config": {"mediaType": OCI_MANIFEST, "digest": D, "size": 1},
      "layers": []}, OCI_MANIFEST),  # a config that claims to be a manifest
])
def test_media_types_must_fit_the_document(doc: dict[str, object], content_type: str) -> None:
    with pytest.raises(OciError) as refused:
        parse_manifest(json.dumps(doc).encode(), content_type)
    assert refused.value.error.code == "MANIFEST_INVALID"


@pytest.mark.parametrize("body,content_type", [
    (b"not json", OCI_MANIFEST),
    (b"[]", OCI_MANIFEST),
    (manifest(schemaVersion=1), OCI_MANIFEST),
    (manifest(), DOCKER_MANIFEST),  # Content-Type disagrees with mediaType
    (manifest(layers=[{"mediaType": "x", "digest": "sha256:zz", "size": 1}]), OCI_MANIFEST),
    (manifest(layers=[{"mediaType": "x", "digest": D, "size": -1}]), OCI_MANIFEST),
    (manifest(config=None), OCI_MANIFEST),
    (manifest(mediaType="text/plain"), "text/plain"),
    (b" " * (4 * 1024 * 1024 + 1), OCI_MANIFEST),
])
def test_bad_manifests(body: bytes, content_type: str) -> None:
    with pytest.raises(OciError) as caught:
        parse_manifest(body, content_type)
    assert caught.value.error.code == "MANIFEST_INVALID"


@pytest.mark.parametrize("path,method,spec_id,params", [
    ("/v2/", "GET", "end-1", {}),
    ("/v2/a/b/blobs/" + D, "HEAD", "end-2", {"name": "a/b", "digest": D}),
    ("/v2/a/blobs/uploads/", "POST", "end-4a", {"name": "a"}),
    ("/v2/a/blobs/uploads/xyz", "PATCH", "end-5", {"name": "a", "upload_id": "xyz"}),
    ("/v2/a/b/c/manifests/v1", "PUT", "end-3", {"name": "a/b/c", "reference": "v1"}),
    ("/v2/a/tags/list", "GET", "end-8a", {"name": "a"}),
    ("/v2/_catalog", "GET", "end-8b", {}),
    ("/v2/a/referrers/" + D, "GET", "end-12a", {"name": "a", "digest": D}),
])
def test_route_table(path: str, method: str, spec_id: str, params: dict[str, str]) -> None:
    route, _, _, found = match(path, method)
    assert route.spec_id == spec_id
    assert {k: v for k, v in found.items() if v is not None} == params


def test_route_errors() -> None:
    with pytest.raises(OciError) as caught:
        match("/v2/a/tags/list", "DELETE")
    assert caught.value.status == 405 and "GET" in caught.value.headers["Allow"]
    with pytest.raises(OciError) as caught:
        match("/v2/a/nothing/here", "GET")
    assert caught.value.status == 404
