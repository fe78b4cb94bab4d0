"""distribution-spec 1.1, workflow 2 "Push": blob uploads (end-4a/4b, end-5, end-6, end-11,
end-13, end-14) and manifest pushes (end-7), with the error answer of each failure."""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

from tests.integration.spec.conftest import (
    EMPTY_JSON,
    EMPTY_JSON_DIGEST,
    EMPTY_SHA256,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    OciClient,
    assert_error,
    config_blob,
    empty_config,
    encode,
    image_manifest,
    random_blob,
    sha256,
)
from tests.support.emulator import EmulatorProcess

OCTET = {"Content-Type": "application/octet-stream"}


def _chunk_headers(start: int, chunk: bytes) -> dict[str, str]:
    return {**OCTET, "Content-Range": f"{start}-{start + len(chunk) - 1}",
            "Content-Length": str(len(chunk))}


async def _pullable(oci: OciClient, repo: str, blob: Blob, location: str) -> None:
    """"<blob-location> is a pullable blob URL": GET it and get the blob."""
    assert location, "no Location"
    assert oci.url(location).endswith(f"/v2/{repo}/blobs/{blob.digest}"), location
    answer = await oci.get(location, follow=True)
    assert answer.status == 200, answer
    assert answer.body == blob.data


# -- upload sessions --------------------------------------------------------------------------


async def test_post_starts_an_upload_session(oci: OciClient, repo: str) -> None:
    """end-4a: "Upon success, the response MUST have a code of 202 Accepted, and MUST include the
    following header: Location"; "The <location> MUST contain a UUID representing a unique
    session ID for the upload to follow"."""
    first = await oci.post(f"/v2/{repo}/blobs/uploads/")
    second = await oci.post(f"/v2/{repo}/blobs/uploads/")
    for answer in (first, second):
        assert answer.status == 202, answer
        assert f"/v2/{repo}/blobs/uploads/" in answer.location
        session = answer.location.split("?")[0].rstrip("/").rsplit("/", 1)[1]
        uuid.UUID(session)  # raises if it is not a UUID
    assert first.location != second.location


async def test_post_then_put_monolithic(oci: OciClient, repo: str) -> None:
    """end-4a + end-6 (POST then PUT): the PUT to <location>?digest=<digest> with the whole blob
    "MUST have code 201 Created and MUST have the following header: Location: <blob-location>",
    a pullable blob URL; Docker-Content-Digest names the blob."""
    blob = random_blob(2048)
    started = await oci.start_upload(repo)
    done = await oci.put(started.location, params={"digest": blob.digest}, data=blob.data,
                         headers={**OCTET, "Content-Length": str(blob.size)})
    assert done.status == 201, done
    assert done.headers["Docker-Content-Digest"] == blob.digest
    await _pullable(oci, repo, blob, done.location)


async def test_single_post_monolithic(oci: OciClient, repo: str) -> None:
    """end-4b: "Successful completion of the request MUST return a 201 Created and MUST include the
    following header: Location: <blob-location>" (conformance: POST request with digest and blob
    should yield a 201 or 202, then GET of the blob 200)."""
    blob = config_blob()
    answer = await oci.post(f"/v2/{repo}/blobs/uploads/", params={"digest": blob.digest},
                            data=blob.data, headers={**OCTET, "Content-Length": str(blob.size)})
    assert answer.status == 201, answer
    assert answer.headers["Docker-Content-Digest"] == blob.digest
    await _pullable(oci, repo, blob, answer.location)


async def test_single_post_digest_mismatch(oci: OciClient, repo: str) -> None:
    """end-4b: "the <digest> MUST match the blob's digest"; a mismatch fails with 400 and code-4
    DIGEST_INVALID, and no blob appears under either digest."""
    blob, claimed = random_blob(), random_blob()
    answer = await oci.post(f"/v2/{repo}/blobs/uploads/", params={"digest": claimed.digest},
                            data=blob.data, headers=OCTET)
    assert_error(answer, 400, "DIGEST_INVALID")
    for digest in (blob.digest, claimed.digest):
        assert (await oci.head(f"/v2/{repo}/blobs/{digest}")).status == 404


async def test_put_digest_mismatch(oci: OciClient, repo: str) -> None:
    """end-6 failure 400: a closing PUT whose digest is not the uploaded content's is refused
    with code-4 DIGEST_INVALID ("provided digest did not match uploaded content")."""
    blob, claimed = random_blob(), random_blob()
    started = await oci.start_upload(repo)
    answer = await oci.put(started.location, params={"digest": claimed.digest}, data=blob.data,
                           headers=OCTET)
    assert_error(answer, 400, "DIGEST_INVALID")
    for digest in (blob.digest, claimed.digest):
        assert (await oci.head(f"/v2/{repo}/blobs/{digest}")).status == 404


async def test_put_without_digest(oci: OciClient, repo: str) -> None:
    """end-6: "The closing PUT request MUST include the <digest> of the whole blob"; without it
    the request fails with 400 and a spec error body."""
    started = await oci.start_upload(repo)
    answer = await oci.put(started.location, data=b"abc", headers=OCTET)
    assert_error(answer, 400, "DIGEST_INVALID", "BLOB_UPLOAD_INVALID")


async def test_put_malformed_digest(oci: OciClient, repo: str) -> None:
    """end-6 failure 400: a digest outside the grammar is code-4 DIGEST_INVALID."""
    started = await oci.start_upload(repo)
    answer = await oci.put(started.location, params={"digest": "sha256:nothex"}, data=b"abc",
                           headers=OCTET)
    assert_error(answer, 400, "DIGEST_INVALID")


# -- streamed and chunked uploads -------------------------------------------------------------


async def test_streamed_patch_then_put(oci: OciClient, repo: str) -> None:
    """Conformance "Blob Upload Streamed": a PATCH without Content-Range carrying the whole blob
    "should yield 202", then a PUT with the digest and no body "should yield 201" with
    Location."""
    blob = random_blob(4242)
    started = await oci.start_upload(repo)
    patched = await oci.patch(started.location, data=blob.data, headers=OCTET)
    assert patched.status == 202, patched
    assert patched.location
    assert patched.headers["Range"] == f"0-{blob.size - 1}"
    done = await oci.put(patched.location, params={"digest": blob.digest},
                         headers={**OCTET, "Content-Length": "0"})
    assert done.status == 201, done
    await _pullable(oci, repo, blob, done.location)


async def test_chunked_upload(oci: OciClient, repo: str) -> None:
    """end-5 PATCH: "The response for each successful chunk upload MUST be 202 Accepted, and MUST
    have the following headers: Location: <location>, Range: 0-<end-of-range>"; end-13 GET:
    "The response to an active upload <location> MUST be a 204 No Content response code, and
    MUST have the following headers: Location, Range"; re-sending a chunk already received is
    out of order: 416; end-6 PUT closes with 201."""
    blob = random_blob(42)
    chunk1, chunk2 = blob.data[:22], blob.data[22:]
    started = await oci.start_upload(repo)
    first = await oci.patch(started.location, data=chunk1, headers=_chunk_headers(0, chunk1))
    assert first.status == 202, first
    assert first.location
    assert first.headers["Range"] == "0-21"
    retried = await oci.patch(started.location, data=chunk1, headers=_chunk_headers(0, chunk1))
    assert_error(retried, 416, "BLOB_UPLOAD_INVALID")
    status = await oci.get(started.location)
    assert status.status == 204, status
    assert status.location
    assert status.headers["Range"] == "0-21"
    second = await oci.patch(status.location, data=chunk2, headers=_chunk_headers(22, chunk2))
    assert second.status == 202, second
    assert second.headers["Range"] == "0-41"
    done = await oci.put(second.location, params={"digest": blob.digest},
                         headers={**OCTET, "Content-Length": "0"})
    assert done.status == 201, done
    assert done.headers["Docker-Content-Digest"] == blob.digest
    await _pullable(oci, repo, blob, done.location)


async def test_final_chunk_in_put(oci: OciClient, repo: str) -> None:
    """"The final chunk MAY be uploaded using a PATCH request or it MAY be uploaded in the
    closing PUT request" (conformance: PUT request with final chunk should return 201)."""
    blob = random_blob(100)
    chunk1, chunk2 = blob.data[:51], blob.data[51:]
    started = await oci.start_upload(repo)
    first = await oci.patch(started.location, data=chunk1, headers=_chunk_headers(0, chunk1))
    assert first.status == 202, first
    done = await oci.put(first.location, params={"digest": blob.digest}, data=chunk2,
                         headers=_chunk_headers(51, chunk2))
    assert done.status == 201, done
    await _pullable(oci, repo, blob, done.location)


async def test_out_of_order_chunk(oci: OciClient, repo: str) -> None:
    """end-5 failure 416: "If a chunk is uploaded out of order, the registry MUST respond with a
    416 Requested Range Not Satisfiable code" — a first chunk not starting at 0, and a chunk
    leaving a gap; the session survives and GET reports where it stands."""
    blob = random_blob(42)
    started = await oci.start_upload(repo)
    tail = blob.data[22:]
    assert_error(await oci.patch(started.location, data=tail, headers=_chunk_headers(22, tail)),
                 416, "BLOB_UPLOAD_INVALID")
    first = await oci.patch(started.location, data=blob.data[:10],
                            headers=_chunk_headers(0, blob.data[:10]))
    assert first.status == 202, first
    assert_error(await oci.patch(first.location, data=tail, headers=_chunk_headers(22, tail)),
                 416, "BLOB_UPLOAD_INVALID")
    misplaced = await oci.put(first.location, params={"digest": blob.digest}, data=tail,
                              headers=_chunk_headers(22, tail))
    assert_error(misplaced, 416, "BLOB_UPLOAD_INVALID")  # also for a final chunk in the PUT
    status = await oci.get(first.location)
    assert status.status == 204, status
    assert status.headers["Range"] == "0-9"
    rest = blob.data[10:]
    done = await oci.put(status.location, params={"digest": blob.digest}, data=rest,
                         headers=_chunk_headers(10, rest))
    assert done.status == 201, done
    await _pullable(oci, repo, blob, done.location)


async def test_content_range_disagrees_with_content_length(oci: OciClient, repo: str) -> None:
    """end-5: "<length> is the content-length, in bytes, of the current chunk" and <range> its
    inclusive range; a Content-Range that does not describe the body is refused (4xx, spec
    error body), and nothing is appended."""
    started = await oci.start_upload(repo)
    answer = await oci.patch(started.location, data=b"x" * 10,
                             headers={**OCTET, "Content-Range": "0-19", "Content-Length": "10"})
    assert answer.status in (400, 416), answer
    assert_error(answer, answer.status, "BLOB_UPLOAD_INVALID", "SIZE_INVALID")
    chunk = b"y" * 10  # nothing was appended: the upload still starts at 0
    answer = await oci.patch(started.location, data=chunk, headers=_chunk_headers(0, chunk))
    assert answer.status == 202, answer
    assert answer.headers["Range"] == "0-9"


async def test_large_chunked_upload_becomes_ecr_parts(oci: OciClient, repo: str,
                                                      upstream: EmulatorProcess) -> None:
    """A chunked upload larger than two ECR parts, in chunks of uneven sizes (one of them a
    streamed body without Content-Length) and a final chunk in the PUT: every PATCH answers 202
    with Range 0-<end>, the blob reads back identical before and after a manifest references it,
    and upstream it arrived as several UploadLayerPart calls and one CompleteLayerUpload."""
    size = 23 * 1024 * 1024 + 4321
    data = os.urandom(size)
    blob = Blob(data)
    cuts = [0, 3 * 1024 * 1024 + 7, 9 * 1024 * 1024, 9 * 1024 * 1024 + 1, 17 * 1024 * 1024 + 5,
            size - 1000, size]
    started = await oci.start_upload(repo)
    location = started.location
    for index, (start, end) in enumerate(itertools.pairwise(cuts[:-1])):
        chunk = data[start:end]
        if index == 3:  # a streamed chunk: chunked transfer encoding, no Content-Length
            async def body(chunk: bytes = chunk) -> AsyncIterator[bytes]:
                for at in range(0, len(chunk), 1 << 20):
                    yield chunk[at:at + (1 << 20)]

            async with oci.session.patch(oci.url(location), data=body(), headers={
                    **OCTET, "Content-Range": f"{start}-{end - 1}"}) as response:
                await response.read()
                assert response.status == 202, await response.text()
                assert response.headers["Range"] == f"0-{end - 1}"
                location = response.headers["Location"]
            continue
        answer = await oci.patch(location, data=chunk, headers=_chunk_headers(start, chunk))
        assert answer.status == 202, answer
        assert answer.headers["Range"] == f"0-{end - 1}"
        location = answer.location
    last = data[cuts[-2]:]
    done = await oci.put(location, params={"digest": blob.digest}, data=last,
                         headers=_chunk_headers(cuts[-2], last))
    assert done.status == 201, done
    head = await oci.head(f"/v2/{repo}/blobs/{blob.digest}")
    assert head.status == 200, head
    assert head.headers["Content-Length"] == str(size)
    staged = await oci.fetch_blob(repo, blob.digest)
    assert staged.status == 200 and sha256(staged.body) == blob.digest
    config = config_blob()
    await oci.upload(repo, config)
    await oci.push(repo, "big", image_manifest(config, [blob]))
    served = await oci.fetch_blob(repo, blob.digest)
    assert served.status == 200 and sha256(served.body) == blob.digest
    log = await upstream_requests(upstream, repo)
    parts = [e for e in log if e["action"] == "UploadLayerPart" and e["status"] == 200]
    completes = [e for e in log if e["action"] == "CompleteLayerUpload" and e["status"] == 200]
    assert len(parts) >= 3, [e["action"] for e in log]
    assert len(completes) == 2  # the big layer and the config


async def upstream_requests(upstream: EmulatorProcess, repo: str) -> list[dict[str, Any]]:
    entries = await asyncio.to_thread(upstream.requests)
    return [e for e in entries if e.get("repository") == repo]


async def test_concurrent_uploads_of_one_blob(oci: OciClient, repo: str) -> None:
    """Layer Upload De-duplication: "If process A and B upload the same layer at the same time,
    both operations will proceed and the first to complete will be stored in the registry" —
    both sessions close with 201, and an upload of a blob already present succeeds too."""
    blob = random_blob(5000)
    first, second = await oci.start_upload(repo), await oci.start_upload(repo)
    half = blob.data[:2500]
    for started in (first, second):
        answer = await oci.patch(started.location, data=half, headers=_chunk_headers(0, half))
        assert answer.status == 202, answer
    rest = blob.data[2500:]
    for started in (first, second):
        done = await oci.put(started.location, params={"digest": blob.digest}, data=rest,
                             headers=_chunk_headers(2500, rest))
        assert done.status == 201, done
        await _pullable(oci, repo, blob, done.location)
    await oci.upload(repo, blob)
    await oci.push(repo, "dedup", image_manifest(await oci.upload(repo, config_blob()), [blob]))
    await oci.upload(repo, blob)  # once more, now that ECR serves it
    await _pullable(oci, repo, blob, f"/v2/{repo}/blobs/{blob.digest}")


async def test_unknown_upload_session(oci: OciClient, repo: str) -> None:
    """end-5/6/13/14 failure 404: a session the registry does not know is code-3
    BLOB_UPLOAD_UNKNOWN for PATCH, PUT, GET and DELETE."""
    await oci.upload(repo, random_blob())
    location = f"/v2/{repo}/blobs/uploads/{uuid.uuid4()}"
    blob = random_blob(10)
    assert_error(await oci.patch(location, data=blob.data, headers=_chunk_headers(0, blob.data)),
                 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(await oci.put(location, params={"digest": blob.digest}, data=blob.data,
                               headers=OCTET), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(await oci.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(await oci.delete(location), 404, "BLOB_UPLOAD_UNKNOWN")


async def test_session_of_another_repository(oci: OciClient, repo: str) -> None:
    """A session belongs to the repository it was opened on: used under another name it is
    unknown (404 BLOB_UPLOAD_UNKNOWN)."""
    started = await oci.start_upload(repo)
    other = repo + "-other"
    await oci.upload(other, random_blob())
    moved = oci.url(started.location).replace(f"/v2/{repo}/", f"/v2/{other}/")
    assert_error(await oci.get(moved), 404, "BLOB_UPLOAD_UNKNOWN")


# -- zero-length blobs ------------------------------------------------------------------------


async def test_zero_length_blob_upload(oci: OciClient, repo: str,
                                       upstream: EmulatorProcess) -> None:
    """A zero-length blob is accepted by every upload shape (POST+PUT, single POST, PATCH of
    nothing then PUT) under the sha256 of no bytes, without storing anything upstream (no
    UploadLayerPart, no CompleteLayerUpload: ECR cannot hold an empty layer); any other digest
    for no bytes is DIGEST_INVALID."""
    empty = Blob(b"")
    assert empty.digest == EMPTY_SHA256
    await oci.upload(repo, empty)
    single = await oci.post(f"/v2/{repo}/blobs/uploads/", params={"digest": EMPTY_SHA256},
                            headers={**OCTET, "Content-Length": "0"})
    assert single.status == 201, single
    await _pullable(oci, repo, empty, single.location)
    started = await oci.start_upload(repo)
    patched = await oci.patch(started.location, data=b"", headers=OCTET)
    assert patched.status == 202, patched
    done = await oci.put(patched.location, params={"digest": EMPTY_SHA256},
                         headers={**OCTET, "Content-Length": "0"})
    assert done.status == 201, done
    started = await oci.start_upload(repo)
    wrong = await oci.put(started.location, params={"digest": random_blob().digest},
                          headers={**OCTET, "Content-Length": "0"})
    assert_error(wrong, 400, "DIGEST_INVALID")
    actions = {e["action"] for e in await upstream_requests(upstream, repo)}
    assert not actions & {"UploadLayerPart", "CompleteLayerUpload"}, actions


# -- cross-repository mount -------------------------------------------------------------------


async def test_mount_uploaded_blob(oci: OciClient, repo: str) -> None:
    """end-11: "The response to a successful mount MUST be 201 Created, and MUST contain the
    following header: Location: <blob-location>" — here for a blob just uploaded to the source
    (not yet referenced by any image); the blob is then pullable in the target."""
    blob = await oci.upload(repo, random_blob(777))
    target = repo + "-mount"
    answer = await oci.post(f"/v2/{target}/blobs/uploads/",
                            params={"mount": blob.digest, "from": repo})
    assert answer.status == 201, answer
    assert answer.headers["Docker-Content-Digest"] == blob.digest
    assert oci.url(answer.location) == oci.url(f"/v2/{target}/blobs/{blob.digest}")
    await _pullable(oci, target, blob, answer.location)


async def test_mount_referenced_blob(oci: OciClient, repo: str) -> None:
    """end-11 201 for a layer the source serves from ECR (an image references it)."""
    image = await oci.push_image(repo, "v1", layer_size=3000)
    layer = image.blobs[1]
    target = repo + "-mount"
    answer = await oci.post(f"/v2/{target}/blobs/uploads/",
                            params={"mount": layer.digest, "from": repo})
    assert answer.status == 201, answer
    await _pullable(oci, target, layer, answer.location)
    head = await oci.head(f"/v2/{target}/blobs/{layer.digest}")
    assert head.status == 200 and head.headers["Content-Length"] == "3000", head


async def test_mount_from_same_repository(oci: OciClient, repo: str) -> None:
    """end-11 with from = the target itself, where the blob already is: 201."""
    blob = await oci.upload(repo, random_blob())
    answer = await oci.post(f"/v2/{repo}/blobs/uploads/",
                            params={"mount": blob.digest, "from": repo})
    assert answer.status == 201, answer
    await _pullable(oci, repo, blob, answer.location)


async def test_mount_unknown_blob_opens_a_session(oci: OciClient, repo: str) -> None:
    """end-11: "if a registry does not support cross-repository mounting or is unable to mount the
    requested blob, it SHOULD return a 202. This indicates that the upload session has begun and
    that the client MAY proceed with the upload" (conformance: cross-mounting of nonexistent blob
    should yield session id) — and that session works."""
    await oci.upload(repo, random_blob())
    blob = random_blob()
    target = repo + "-mount"
    answer = await oci.post(f"/v2/{target}/blobs/uploads/",
                            params={"mount": blob.digest, "from": repo})
    assert answer.status == 202, answer
    assert f"/v2/{target}/blobs/uploads/" in answer.location
    done = await oci.put(answer.location, params={"digest": blob.digest}, data=blob.data,
                         headers=OCTET)
    assert done.status == 201, done
    await _pullable(oci, target, blob, done.location)


async def test_mount_from_unknown_repository(oci: OciClient, repo: str) -> None:
    """end-11 from a repository that does not exist: no mount, 202 and an upload session."""
    blob = random_blob()
    answer = await oci.post(f"/v2/{repo}/blobs/uploads/",
                            params={"mount": blob.digest, "from": repo + "-nowhere"})
    assert answer.status == 202, answer
    assert f"/v2/{repo}/blobs/uploads/" in answer.location


async def test_mount_without_from(oci: OciClient, repo: str) -> None:
    """Conformance "Cross-mounting of a blob without the from argument should yield session id":
    "The registry MAY treat the from parameter as optional"; this one does not discover the
    source, so it opens a session: 202 with Location."""
    blob = await oci.upload(repo, random_blob())
    target = repo + "-mount"
    answer = await oci.post(f"/v2/{target}/blobs/uploads/", params={"mount": blob.digest})
    assert answer.status == 202, answer
    assert f"/v2/{target}/blobs/uploads/" in answer.location


async def test_mount_malformed_digest(oci: OciClient, repo: str) -> None:
    """end-11 with a mount digest outside the grammar: 400 DIGEST_INVALID."""
    answer = await oci.post(f"/v2/{repo}/blobs/uploads/",
                            params={"mount": "sha256:xyz", "from": repo + "-src"})
    assert_error(answer, 400, "DIGEST_INVALID")


# -- manifests --------------------------------------------------------------------------------


async def test_push_manifest_by_tag(oci: OciClient, repo: str) -> None:
    """end-7: "Upon a successful upload, the registry MUST return response code 201 Created, and
    MUST have the following header: Location: <location>" (a pullable manifest URL);
    Docker-Content-Digest is the digest of the uploaded manifest. Conformance pushes the same
    manifest under four tags."""
    config, layer = config_blob(), random_blob()
    await oci.upload_all(repo, config, layer)
    body = encode(image_manifest(config, [layer]))
    for tag in ("test0", "test1", "test2", "test3"):
        answer = await oci.put_manifest(repo, tag, body, OCI_MANIFEST)
        assert answer.status == 201, answer
        assert answer.headers["Docker-Content-Digest"] == sha256(body)
        assert answer.location
        pulled = await oci.get(answer.location, headers={"Accept": OCI_MANIFEST})
        assert pulled.status == 200 and pulled.body == body, pulled


async def test_push_manifest_by_digest(oci: OciClient, repo: str) -> None:
    """end-7 with <reference> a digest: 201, Location, Docker-Content-Digest; the manifest is
    then pullable by that digest."""
    config, layer = config_blob(), random_blob()
    await oci.upload_all(repo, config, layer)
    body = encode(image_manifest(config, [layer]))
    digest = sha256(body)
    answer = await oci.put_manifest(repo, digest, body, OCI_MANIFEST)
    assert answer.status == 201, answer
    assert answer.headers["Docker-Content-Digest"] == digest
    assert oci.url(answer.location) == oci.url(f"/v2/{repo}/manifests/{digest}")
    pulled = await oci.get(answer.location, headers={"Accept": OCI_MANIFEST})
    assert pulled.status == 200 and pulled.body == body, pulled


async def test_push_manifest_digest_mismatch(oci: OciClient, repo: str) -> None:
    """end-7 by digest: the Docker-Content-Digest "MUST match the digest provided by the client";
    a body that does not hash to the reference is DIGEST_INVALID (400)."""
    config = await oci.upload(repo, config_blob())
    body = encode(image_manifest(config, []))
    answer = await oci.put_manifest(repo, random_blob().digest, body, OCI_MANIFEST)
    assert_error(answer, 400, "DIGEST_INVALID")


async def test_push_manifest_with_unknown_blob(oci: OciClient, repo: str) -> None:
    """"A registry MAY reject a manifest if it contains descriptors (other than the subject field)
    that reference blobs or manifests that do not exist in the repository. When a manifest is
    rejected for this reason, the registry MUST return one or more MANIFEST_BLOB_UNKNOWN
    errors" — a missing layer, and a missing config."""
    config, layer = await oci.upload(repo, config_blob()), random_blob()
    missing_layer = image_manifest(config, [layer])
    assert_error(await oci.put_manifest(repo, "latest", missing_layer), 400,
                 "MANIFEST_BLOB_UNKNOWN")
    missing_config = image_manifest(config_blob(), [])
    assert_error(await oci.put_manifest(repo, "latest", missing_config), 400,
                 "MANIFEST_BLOB_UNKNOWN")
    assert (await oci.get(f"/v2/{repo}/manifests/latest")).status == 404


async def test_push_invalid_manifest(oci: OciClient, repo: str) -> None:
    """Code-6 MANIFEST_INVALID (400) for a body that is not a manifest: not JSON, the wrong
    schemaVersion, a config without a digest, and a Content-Type that contradicts mediaType
    ("If a manifest includes a mediaType field, clients MUST set Content-Type to exactly that
    value")."""
    config = await oci.upload(repo, config_blob())
    good = image_manifest(config, [])
    assert_error(await oci.put_manifest(repo, "bad", b"blablabla", OCI_MANIFEST), 400,
                 "MANIFEST_INVALID")
    assert_error(await oci.put_manifest(repo, "bad", {**good, "schemaVersion": 1}), 400,
                 "MANIFEST_INVALID")
    no_digest = {**good, "config": {"mediaType": config.media_type, "size": config.size}}
    assert_error(await oci.put_manifest(repo, "bad", no_digest), 400, "MANIFEST_INVALID")
    assert_error(await oci.put_manifest(repo, "bad", good, OCI_INDEX), 400, "MANIFEST_INVALID")
    assert_error(await oci.put_manifest(repo, "bad", b"", OCI_MANIFEST), 400,
                 "MANIFEST_INVALID")


async def test_push_manifest_without_layers(oci: OciClient, repo: str) -> None:
    """Conformance "Registry should accept a manifest upload with no layers"; "the list of blobs
    MAY be empty"."""
    config = await oci.upload(repo, config_blob())
    pushed = await oci.push(repo, "emptylayer", image_manifest(config, []))
    assert pushed.answer.location
    pulled = await oci.get(f"/v2/{repo}/manifests/emptylayer")
    assert pulled.status == 200 and pulled.body == pushed.body


async def test_push_manifest_content_type_parameters_ignored(oci: OciClient, repo: str) -> None:
    """"Registries SHOULD ignore any parameters if they are present" on Content-Type."""
    config = await oci.upload(repo, config_blob())
    body = encode(image_manifest(config, []))
    answer = await oci.put_manifest(repo, "params", body, OCI_MANIFEST + "; charset=utf-8")
    assert answer.status == 201, answer
    pulled = await oci.get(f"/v2/{repo}/manifests/params")
    assert pulled.headers["Content-Type"] == OCI_MANIFEST


async def test_push_manifest_with_absent_subject(oci: OciClient, repo: str) -> None:
    """"A registry MUST accept a manifest that includes a subject field referencing another
    manifest that does not exist in the repository"; the answer carries "OCI-Subject: <subject
    digest>" to say the registry processed the subject."""
    blob = await oci.upload(repo, random_blob(33, "application/vnd.example.data"))
    await oci.upload(repo, empty_config())
    subject = {"mediaType": OCI_MANIFEST, "digest": random_blob().digest, "size": 1234}
    doc = image_manifest(empty_config(), [blob], artifact_type="application/vnd.example.sig",
                         subject=subject)
    pushed = await oci.push(repo, None, doc)
    assert pushed.answer.headers.get("OCI-Subject") == subject["digest"]


async def test_push_artifact_with_empty_config(oci: OciClient, repo: str) -> None:
    """OCI 1.1 artifacts: the empty descriptor application/vnd.oci.empty.v1+json whose content is
    "{}" (digest sha256:44136f…) uploads as a blob like any other, serves back its two bytes, and
    an artifact manifest with artifactType and that config is accepted and pulled unchanged."""
    empty = await oci.upload(repo, empty_config())
    assert empty.digest == EMPTY_JSON_DIGEST
    fetched = await oci.fetch_blob(repo, EMPTY_JSON_DIGEST)
    assert fetched.status == 200 and fetched.body == EMPTY_JSON, fetched
    head = await oci.head(f"/v2/{repo}/blobs/{EMPTY_JSON_DIGEST}")
    assert head.headers["Content-Length"] == "2"
    payload = await oci.upload(repo, random_blob(99, "application/vnd.example.sbom.v1+json"))
    doc = image_manifest(empty, [payload], artifact_type="application/vnd.example.sbom.v1",
                         annotations={"org.example.kind": "sbom"})
    assert doc["config"]["mediaType"] == OCI_EMPTY
    pushed = await oci.push(repo, "sbom", doc)
    pulled = await oci.get(f"/v2/{repo}/manifests/sbom", headers={"Accept": OCI_MANIFEST})
    assert pulled.status == 200 and pulled.body == pushed.body
    assert pulled.json()["artifactType"] == "application/vnd.example.sbom.v1"
    again = await oci.fetch_blob(repo, EMPTY_JSON_DIGEST)  # now referenced by the artifact
    assert again.status == 200 and again.body == EMPTY_JSON


async def test_push_image_index(oci: OciClient, repo: str) -> None:
    """end-7 of an image index with two platform manifests (pushed by digest first): 201 with
    Location and Docker-Content-Digest; an index naming a manifest the repository lacks is
    refused with MANIFEST_BLOB_UNKNOWN."""
    children = []
    for arch in ("amd64", "arm64"):
        config, layer = config_blob(architecture=arch), random_blob()
        await oci.upload_all(repo, config, layer)
        children.append(await oci.push(repo, None, image_manifest(config, [layer])))
    entries = [child.descriptor(platform={"architecture": arch, "os": "linux"})
               for child, arch in zip(children, ("amd64", "arm64"), strict=True)]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    pushed = await oci.push(repo, "multi", index)
    assert pushed.answer.headers["Docker-Content-Digest"] == pushed.digest
    assert pushed.answer.location
    dangling = {**index, "manifests": [*entries, {
        "mediaType": OCI_MANIFEST, "digest": random_blob().digest, "size": 512,
        "platform": {"architecture": "s390x", "os": "linux"}}]}
    assert_error(await oci.put_manifest(repo, "dangling", dangling), 400,
                 "MANIFEST_BLOB_UNKNOWN")


async def test_push_docker_manifest(oci: OciClient, repo: str) -> None:
    """The API is media-type agnostic: a Docker image manifest v2 (schema 2) pushes with its own
    Content-Type (201) and pulls back byte for byte under that type."""
    docker_manifest = "application/vnd.docker.distribution.manifest.v2+json"
    config = await oci.upload(repo, Blob(config_blob().data,
                                         "application/vnd.docker.container.image.v1+json"))
    layer = await oci.upload(repo, Blob(random_blob().data,
                                        "application/vnd.docker.image.rootfs.diff.tar.gzip"))
    doc = {"schemaVersion": 2, "mediaType": docker_manifest, "config": config.descriptor(),
           "layers": [layer.descriptor()]}
    pushed = await oci.push(repo, "docker", doc)
    pulled = await oci.get(f"/v2/{repo}/manifests/docker",
                           headers={"Accept": f"{docker_manifest}, {OCI_MANIFEST}"})
    assert pulled.status == 200 and pulled.body == pushed.body, pulled
    assert pulled.headers["Content-Type"] == docker_manifest
    assert pulled.headers["Docker-Content-Digest"] == pushed.digest


async def test_repush_and_retag(oci: OciClient, repo: str) -> None:
    """Pushing the same manifest to the same tag again succeeds (201); pushing another manifest
    to an existing tag moves the tag."""
    first = await oci.push_image(repo, "moving")
    again = await oci.put_manifest(repo, "moving", first.body)
    assert again.status == 201, again
    second = await oci.push_image(repo, "moving")
    pulled = await oci.get(f"/v2/{repo}/manifests/moving")
    assert pulled.status == 200 and pulled.body == second.body
    assert (await oci.get(f"/v2/{repo}/manifests/{first.digest}")).status == 200


async def test_push_manifest_too_large(oci: OciClient, repo: str) -> None:
    """"Registries SHOULD enforce a maximum manifest size. If a manifest exceeds this limit, the
    registry SHOULD respond with 413 Payload Too Large"; "Clients and registries SHOULD expect to
    support manifest uploads of at least 4 MiB" — so the limit is above 4 MiB - 1 KiB and a
    5 MiB manifest is refused with 413."""
    config = await oci.upload(repo, config_blob())
    doc = image_manifest(config, [], annotations={"padding": "x" * (5 * 1024 * 1024)})
    answer = await oci.put_manifest(repo, "huge", doc)
    assert answer.status == 413, answer
    assert_error(answer, 413)


async def test_push_manifest_invalid_tag(oci: OciClient, repo: str) -> None:
    """end-7: "<reference> MUST be either a) a digest or b) a tag" matching
    [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}; anything else is a 400 with an error body."""
    config = await oci.upload(repo, config_blob())
    body = encode(image_manifest(config, []))
    for bad in (".dot", "x" * 129):
        answer = await oci.put_manifest(repo, bad, body, OCI_MANIFEST)
        assert answer.status == 400, answer
        assert_error(answer, 400)


async def test_manifest_with_zero_length_layer(oci: OciClient, repo: str) -> None:
    """An image naming the zero-length blob as a layer: the blob itself uploads and serves, but
    no ECR action stores an empty layer and PutImage requires every layer, so the manifest is
    refused with a clear MANIFEST_BLOB_UNKNOWN (400) naming that digest — never a 5xx."""
    config, empty = await oci.upload_all(repo, config_blob(), Blob(b""))
    answer = await oci.put_manifest(repo, "hollow", image_manifest(config, [empty]))
    body = assert_error(answer, 400, "MANIFEST_BLOB_UNKNOWN")
    assert EMPTY_SHA256 in answer.body.decode(), body
    layer = await oci.fetch_blob(repo, EMPTY_SHA256)
    assert layer.status == 200 and layer.body == b""
