"""distribution-spec 1.1, workflow 4 "Content Management": deleting tags and manifests (end-9),
blobs (end-10: ECR cannot, so 405) and upload sessions (end-14)."""

from __future__ import annotations

from tests.integration.spec.conftest import (
    OCI_INDEX,
    OCI_MANIFEST,
    OciClient,
    assert_error,
    config_blob,
    empty_config,
    image_manifest,
    random_blob,
    sha256,
)


async def _tags(oci: OciClient, repo: str) -> list[str]:
    answer = await oci.get(f"/v2/{repo}/tags/list")
    assert answer.status == 200, answer
    return list(answer.json()["tags"])


async def test_delete_manifest_by_digest(oci: OciClient, repo: str) -> None:
    """end-9 by digest: "Upon success, the registry MUST respond with a 202 Accepted code";
    "Once deleted, a GET to /v2/<name>/manifests/<digest> and any tag pointing to that digest
    will return a 404"; the tags list no longer has its tags."""
    image = await oci.push_image(repo, "doomed")
    await oci.push_image(repo, "keeper")
    answer = await oci.delete(f"/v2/{repo}/manifests/{image.digest}")
    assert answer.status == 202, answer
    assert_error(await oci.get(f"/v2/{repo}/manifests/{image.digest}"), 404, "MANIFEST_UNKNOWN")
    assert_error(await oci.get(f"/v2/{repo}/manifests/doomed"), 404, "MANIFEST_UNKNOWN")
    assert (await oci.head(f"/v2/{repo}/manifests/{image.digest}")).status == 404
    assert await _tags(oci, repo) == ["keeper"]


async def test_delete_tag(oci: OciClient, repo: str) -> None:
    """end-9 by tag: "Upon success, the registry MUST respond with a 202 Accepted code"; "Once
    deleted, a GET to /v2/<name>/manifests/<tag> will return a 404"; deleting a tag is not
    deleting the manifest: it stays pullable by digest and under its other tags. Conformance:
    "GET request to tags list should reflect manifest deletion"."""
    image = await oci.push_image(repo, "tagtest0")
    also = await oci.put_manifest(repo, "other", image.body)
    assert also.status == 201, also
    before = await _tags(oci, repo)
    answer = await oci.delete(f"/v2/{repo}/manifests/tagtest0")
    assert answer.status == 202, answer
    assert_error(await oci.get(f"/v2/{repo}/manifests/tagtest0"), 404, "MANIFEST_UNKNOWN")
    after = await _tags(oci, repo)
    assert after == ["other"] and len(after) < len(before)
    by_digest = await oci.get(f"/v2/{repo}/manifests/{image.digest}")
    assert by_digest.status == 200 and by_digest.body == image.body, by_digest


async def test_delete_last_tag_keeps_manifest(oci: OciClient, repo: str) -> None:
    """Deleting an image's only tag leaves the manifest pullable by digest (OCI untag; ECR would
    delete the image with its last tag), and the digest can then be deleted: 202, then 404.
    Conformance: tag DELETE then digest DELETE then GET 404."""
    image = await oci.push_image(repo, "only")
    assert (await oci.delete(f"/v2/{repo}/manifests/only")).status == 202
    assert (await oci.get(f"/v2/{repo}/manifests/only")).status == 404
    kept = await oci.get(f"/v2/{repo}/manifests/{image.digest}")
    assert kept.status == 200 and kept.body == image.body, kept
    assert await _tags(oci, repo) == []
    assert (await oci.delete(f"/v2/{repo}/manifests/{image.digest}")).status == 202
    assert_error(await oci.get(f"/v2/{repo}/manifests/{image.digest}"), 404, "MANIFEST_UNKNOWN")


async def test_delete_unknown_manifest(oci: OciClient, repo: str) -> None:
    """end-9 failure 404: deleting a digest or tag the repository does not have is code-7
    MANIFEST_UNKNOWN."""
    await oci.push_image(repo, "present")
    assert_error(await oci.delete(f"/v2/{repo}/manifests/{sha256(b'nothing')}"), 404,
                 "MANIFEST_UNKNOWN")
    assert_error(await oci.delete(f"/v2/{repo}/manifests/absent"), 404, "MANIFEST_UNKNOWN")


async def test_delete_manifest_in_unknown_repository(oci: OciClient) -> None:
    """end-9: "If the repository does not exist, the response MUST return 404 Not Found"."""
    name = "test/never-pushed-" + random_blob(4).data.hex()
    answer = await oci.delete(f"/v2/{name}/manifests/{sha256(b'nothing')}")
    assert_error(answer, 404, "NAME_UNKNOWN", "MANIFEST_UNKNOWN")


async def test_delete_manifest_twice(oci: OciClient, repo: str) -> None:
    """Conformance "DELETE request to manifest (digest) should yield 202 response unless already
    deleted": the second DELETE is 404."""
    image = await oci.push_image(repo, None)
    assert (await oci.delete(f"/v2/{repo}/manifests/{image.digest}")).status == 202
    assert_error(await oci.delete(f"/v2/{repo}/manifests/{image.digest}"), 404,
                 "MANIFEST_UNKNOWN")


async def test_delete_referrer_leaves_referrers_list(oci: OciClient, repo: str) -> None:
    """Deleting a manifest that has a subject removes it from the subject's referrers (the
    registry keeps the list: clients need not update a referrers tag)."""
    image = await oci.push_image(repo, "v1")
    empty = await oci.upload(repo, empty_config())
    payload = await oci.upload(repo, random_blob(12, "application/vnd.example.sig"))
    signature = await oci.push(repo, None, image_manifest(
        empty, [payload], artifact_type="application/vnd.example.sig",
        subject=image.descriptor()))
    listed = await oci.get(f"/v2/{repo}/referrers/{image.digest}")
    assert [e["digest"] for e in listed.json()["manifests"]] == [signature.digest]
    assert (await oci.delete(f"/v2/{repo}/manifests/{signature.digest}")).status == 202
    listed = await oci.get(f"/v2/{repo}/referrers/{image.digest}")
    assert listed.status == 200 and listed.json()["manifests"] == [], listed


async def test_delete_index_then_children(oci: OciClient, repo: str) -> None:
    """An index and its platform manifests: the index deletes (202), then each child (202)."""
    children = []
    for arch in ("amd64", "arm64"):
        config, layer = config_blob(architecture=arch), random_blob()
        await oci.upload_all(repo, config, layer)
        children.append(await oci.push(repo, None, image_manifest(config, [layer])))
    index = await oci.push(repo, "multi", {
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [child.descriptor() for child in children]})
    assert (await oci.delete(f"/v2/{repo}/manifests/{index.digest}")).status == 202
    assert (await oci.get(f"/v2/{repo}/manifests/multi")).status == 404
    for child in children:
        assert (await oci.get(f"/v2/{repo}/manifests/{child.digest}",
                              headers={"Accept": OCI_MANIFEST})).status == 200
        assert (await oci.delete(f"/v2/{repo}/manifests/{child.digest}")).status == 202
        assert (await oci.get(f"/v2/{repo}/manifests/{child.digest}")).status == 404


async def test_delete_blob_unsupported(oci: OciClient, repo: str) -> None:
    """end-10: "If blob deletion is disabled, the registry MUST respond with either a 400 Bad
    Request or a 405 Method Not Allowed" — ECR removes layers only with the images that use
    them, so the gateway answers 405 with code-14 UNSUPPORTED, and the blob is still there."""
    image = await oci.push_image(repo, "v1")
    staged = await oci.upload(repo, random_blob())
    for blob in (*image.blobs, staged):
        answer = await oci.delete(f"/v2/{repo}/blobs/{blob.digest}")
        assert_error(answer, 405, "UNSUPPORTED")
        assert (await oci.head(f"/v2/{repo}/blobs/{blob.digest}")).status == 200


async def test_cancel_upload(oci: OciClient, repo: str) -> None:
    """end-14: "During a blob upload, the session may be canceled with a DELETE request"; "If
    successful, the response SHOULD be a 204 No Content response code"; the session is then
    unknown (404 BLOB_UPLOAD_UNKNOWN) and nothing it held became a blob."""
    blob = random_blob(64)
    started = await oci.start_upload(repo)
    patched = await oci.patch(started.location, data=blob.data[:30], headers={
        "Content-Type": "application/octet-stream", "Content-Range": "0-29"})
    assert patched.status == 202, patched
    answer = await oci.delete(patched.location, headers={"Content-Length": "0"})
    assert answer.status == 204, answer
    assert_error(await oci.get(patched.location), 404, "BLOB_UPLOAD_UNKNOWN")
    rest = blob.data[30:]
    late = await oci.put(patched.location, params={"digest": blob.digest}, data=rest,
                         headers={"Content-Type": "application/octet-stream",
                                  "Content-Range": f"30-{blob.size - 1}"})
    assert_error(late, 404, "BLOB_UPLOAD_UNKNOWN")
    assert (await oci.head(f"/v2/{repo}/blobs/{blob.digest}")).status == 404


async def test_method_not_allowed(oci: OciClient, repo: str) -> None:
    """A method an endpoint does not have is 405 with an error body and an Allow header."""
    await oci.push_image(repo, "v1")
    answer = await oci.request("PATCH", f"/v2/{repo}/manifests/v1")
    assert_error(answer, 405, "UNSUPPORTED")
    assert "GET" in answer.headers.get("Allow", "")
    assert_error(await oci.delete(f"/v2/{repo}/tags/list"), 405, "UNSUPPORTED")
