"""distribution-spec 1.1, workflow 1 "Pull": end-1, end-2 (GET/HEAD blobs), end-3 (GET/HEAD
manifests), range reads, and the error answers of each."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
import pytest

from tests.integration.spec.conftest import (
    OCI_INDEX,
    OCI_MANIFEST,
    Answer,
    Blob,
    OciClient,
    assert_error,
    config_blob,
    image_manifest,
    random_blob,
    sha256,
)
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

UNKNOWN_DIGEST = sha256(b"hello world")  # the conformance suite's "dummy" digest

Fetch = Callable[[dict[str, str]], Awaitable[Answer]]


async def test_api_version_check(oci: OciClient) -> None:
    """end-1: "If the response is 200 OK, then the registry implements this specification";
    "When a 200 OK or 401 Unauthorized response is returned, the Docker-Distribution-API-Version
    header SHOULD be set to registry/2.0"."""
    answer = await oci.get("/v2/")
    assert answer.status == 200, answer
    assert answer.headers.get("Docker-Distribution-API-Version") == "registry/2.0"
    assert (await oci.get("/v2")).status == 200


# -- blobs ------------------------------------------------------------------------------------


async def test_head_blob(oci: OciClient, repo: str) -> None:
    """end-2 HEAD: "A HEAD request to an existing blob or manifest URL MUST return 200 OK. A
    successful response SHOULD contain the digest of the uploaded blob in the header
    Docker-Content-Digest"; Content-Length is the blob's size; a HEAD answer has no body."""
    blob = await oci.upload(repo, random_blob(300))
    answer = await oci.head(f"/v2/{repo}/blobs/{blob.digest}")
    assert answer.status == 200, answer
    assert answer.headers["Docker-Content-Digest"] == blob.digest
    assert answer.headers["Content-Length"] == "300"
    assert answer.body == b""


async def test_head_blob_unknown(oci: OciClient, repo: str) -> None:
    """end-2 HEAD: "If the blob or manifest is not found in the registry, the response code MUST
    be 404 Not Found" (conformance: HEAD request to nonexistent blob)."""
    await oci.upload(repo, random_blob())  # the repository exists; the blob does not
    answer = await oci.head(f"/v2/{repo}/blobs/{UNKNOWN_DIGEST}")
    assert answer.status == 404, answer
    assert answer.body == b""


async def test_get_blob_unknown(oci: OciClient, repo: str) -> None:
    """end-2 GET: "If the blob is not found in the registry, the response code MUST be 404 Not
    Found", with error code-1 BLOB_UNKNOWN."""
    await oci.upload(repo, random_blob())
    assert_error(await oci.get(f"/v2/{repo}/blobs/{UNKNOWN_DIGEST}"), 404, "BLOB_UNKNOWN")


async def test_get_blob_right_after_upload(oci: OciClient, repo: str) -> None:
    """end-2 GET: "A GET request to an existing blob URL MUST provide the expected blob, with a
    response code that MUST be 200 OK", and Docker-Content-Digest "MUST be a digest matching that
    of the response body" — also before any manifest references the blob (conformance: "GET
    request to blob URL from prior request should yield 200"; the gateway serves it from its
    staging store because ECR serves only referenced layers)."""
    blob = await oci.upload(repo, random_blob(1000))
    answer = await oci.get(f"/v2/{repo}/blobs/{blob.digest}")
    assert answer.status == 200, answer
    assert answer.body == blob.data
    assert answer.headers["Docker-Content-Digest"] == blob.digest
    assert answer.headers["Content-Length"] == "1000"


async def test_get_blob_referenced_by_image(oci: OciClient, repo: str) -> None:
    """end-2 GET of a layer an image references (served by ECR): the gateway answers 200 with
    the bytes or redirects to where they are; either way Docker-Content-Digest names the blob
    and the bytes fetched hash to the requested digest."""
    image = await oci.push_image(repo, "v1", layer_size=5000)
    for blob in image.blobs:
        own = await oci.get(f"/v2/{repo}/blobs/{blob.digest}")
        assert own.status in (200, 307), own
        assert own.headers["Docker-Content-Digest"] == blob.digest
        if own.status == 307:
            assert own.location, own
        fetched = await oci.fetch_blob(repo, blob.digest)
        assert fetched.status == 200, fetched
        assert sha256(fetched.body) == blob.digest
        head = await oci.head(f"/v2/{repo}/blobs/{blob.digest}")
        assert head.status == 200, head
        assert head.headers["Content-Length"] == str(blob.size)
        assert head.headers["Docker-Content-Digest"] == blob.digest


async def test_get_blob_malformed_digest(oci: OciClient, repo: str) -> None:
    """Digests follow the spec's grammar (algorithm ":" encoded); a malformed one is refused
    with code-4 DIGEST_INVALID and 400, not looked up."""
    await oci.upload(repo, random_blob())
    for bad in ("sha256:totallywrong", "sha256:" + "a" * 63, "nodigest"):
        assert_error(await oci.get(f"/v2/{repo}/blobs/{bad}"), 400, "DIGEST_INVALID")


async def test_blob_in_unknown_repository(oci: OciClient) -> None:
    """end-2 on a repository that does not exist: 404 (BLOB_UNKNOWN or NAME_UNKNOWN)."""
    name = "test/never-pushed-" + random_blob(4).data.hex()
    assert_error(await oci.get(f"/v2/{name}/blobs/{UNKNOWN_DIGEST}"), 404,
                 "BLOB_UNKNOWN", "NAME_UNKNOWN")
    assert (await oci.head(f"/v2/{name}/blobs/{UNKNOWN_DIGEST}")).status == 404


async def test_invalid_repository_name(oci: OciClient) -> None:
    """"<name> MUST match the following regular expression
    [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(\\/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*": others get
    code-8 NAME_INVALID."""
    for name in ("Upper/case", "trailing-/x", "a//b", "-lead"):
        assert_error(await oci.get(f"/v2/{name}/blobs/{UNKNOWN_DIGEST}"), 400, "NAME_INVALID")
        assert_error(await oci.get(f"/v2/{name}/manifests/latest"), 400, "NAME_INVALID")


# -- range reads ------------------------------------------------------------------------------


async def _check_ranges(fetch: Fetch, blob: Blob) -> None:
    data, size = blob.data, blob.size
    answer = await fetch({"Range": "bytes=10-19"})
    assert answer.status == 206, answer
    assert answer.body == data[10:20]
    assert answer.headers["Content-Range"] == f"bytes 10-19/{size}"
    answer = await fetch({"Range": "bytes=-7"})  # suffix: the last 7 bytes
    assert answer.status == 206, answer
    assert answer.body == data[-7:]
    answer = await fetch({"Range": f"bytes={size - 5}-"})  # open-ended: resume a download
    assert answer.status == 206, answer
    assert answer.body == data[-5:]
    assert answer.headers["Content-Range"] == f"bytes {size - 5}-{size - 1}/{size}"
    answer = await fetch({"Range": f"bytes={size + 10}-{size + 20}"})
    assert answer.status == 416, answer


async def test_range_read_of_uploaded_blob(oci: OciClient, repo: str) -> None:
    """"Registries SHOULD support the HTTP Range: request header as defined in RFC 9110" (Resumable
    Pull): 206 with Content-Range for a satisfiable range, 416 for one past the end — on a blob
    read back before any manifest references it."""
    blob = await oci.upload(repo, random_blob(4096))

    async def fetch(headers: dict[str, str]) -> Answer:
        return await oci.fetch_blob(repo, blob.digest, headers)

    await _check_ranges(fetch, blob)
    assert_error(await oci.get(f"/v2/{repo}/blobs/{blob.digest}",
                               headers={"Range": "bytes=99999-"}), 416)


async def test_range_read_of_referenced_blob(oci: OciClient, repo: str) -> None:
    """Range reads (RFC 9110) of a layer ECR serves, through the gateway's redirect: the Range
    header reaches the storage that answers."""
    image = await oci.push_image(repo, "v1", layer_size=4096)
    layer = image.blobs[1]

    async def fetch(headers: dict[str, str]) -> Answer:
        return await oci.fetch_blob(repo, layer.digest, headers)

    await _check_ranges(fetch, layer)


# -- manifests --------------------------------------------------------------------------------


async def test_get_manifest_by_tag_and_digest(oci: OciClient, repo: str) -> None:
    """end-3 GET: "A GET request to an existing manifest URL MUST provide the expected manifest,
    with a response code that MUST be 200 OK"; Content-Type is the manifest's media type;
    Docker-Content-Digest is the manifest's digest; the body is the pushed bytes exactly."""
    image = await oci.push_image(repo, "tagtest0")
    for reference in ("tagtest0", image.digest):
        answer = await oci.get(f"/v2/{repo}/manifests/{reference}",
                               headers={"Accept": OCI_MANIFEST})
        assert answer.status == 200, answer
        assert answer.body == image.body
        assert answer.headers["Content-Type"] == OCI_MANIFEST
        assert answer.headers["Docker-Content-Digest"] == image.digest
        assert answer.headers["Content-Length"] == str(len(image.body))


async def test_head_manifest_by_tag_and_digest(oci: OciClient, repo: str) -> None:
    """end-3 HEAD: "A HEAD request to an existing blob or manifest URL MUST return 200 OK", with
    Docker-Content-Digest and the manifest's Content-Length and Content-Type, and no body."""
    image = await oci.push_image(repo, "tagtest0")
    for reference in ("tagtest0", image.digest):
        answer = await oci.head(f"/v2/{repo}/manifests/{reference}",
                                headers={"Accept": OCI_MANIFEST})
        assert answer.status == 200, answer
        assert answer.body == b""
        assert answer.headers["Docker-Content-Digest"] == image.digest
        assert answer.headers["Content-Length"] == str(len(image.body))
        assert answer.headers["Content-Type"] == OCI_MANIFEST


async def test_get_manifest_without_accept(oci: OciClient, repo: str) -> None:
    """The client SHOULD send Accept; one that does not still gets the manifest and its type."""
    image = await oci.push_image(repo, "latest")
    answer = await oci.get(f"/v2/{repo}/manifests/latest")
    assert answer.status == 200, answer
    assert answer.body == image.body
    assert answer.headers["Content-Type"] == OCI_MANIFEST


async def test_manifest_unknown(oci: OciClient, repo: str) -> None:
    """end-3: "If the manifest is not found in the registry, the response code MUST be 404 Not
    Found" (code-7 MANIFEST_UNKNOWN), by tag and by digest, for GET and HEAD."""
    await oci.push_image(repo, "present")
    for reference in ("absent", UNKNOWN_DIGEST):
        assert_error(await oci.get(f"/v2/{repo}/manifests/{reference}"), 404,
                     "MANIFEST_UNKNOWN")
        head = await oci.head(f"/v2/{repo}/manifests/{reference}")
        assert head.status == 404, head
        assert head.body == b""


async def test_manifest_reference_that_cannot_exist(oci: OciClient, repo: str) -> None:
    """The conformance suite asks for ".INVALID_MANIFEST_NAME" and expects 404 (GET and HEAD):
    no manifest can be known under a reference outside the tag grammar."""
    await oci.push_image(repo, "present")
    assert_error(await oci.get(f"/v2/{repo}/manifests/.INVALID_MANIFEST_NAME"), 404,
                 "MANIFEST_UNKNOWN")
    assert (await oci.head(f"/v2/{repo}/manifests/.INVALID_MANIFEST_NAME")).status == 404


async def test_manifest_malformed_digest(oci: OciClient, repo: str) -> None:
    """Conformance "400 response body should contain OCI-conforming JSON message": GET
    manifests/sha256:totallywrong is 400 (or 404) with a spec error code."""
    await oci.push_image(repo, "present")
    answer = await oci.get(f"/v2/{repo}/manifests/sha256:totallywrong",
                           headers={"Content-Type": OCI_MANIFEST})
    assert answer.status in (400, 404), answer
    assert_error(answer, answer.status, "DIGEST_INVALID", "MANIFEST_UNKNOWN",
                 "MANIFEST_INVALID")


async def test_manifest_in_unknown_repository(oci: OciClient) -> None:
    """"An attempt to pull a nonexistent repository MUST return response code 404 Not Found"."""
    name = "test/never-pushed-" + random_blob(4).data.hex()
    assert_error(await oci.get(f"/v2/{name}/manifests/latest"), 404,
                 "NAME_UNKNOWN", "MANIFEST_UNKNOWN")
    assert (await oci.head(f"/v2/{name}/manifests/latest")).status == 404


async def test_pull_image_index(oci: OciClient, repo: str) -> None:
    """An image index with two platform manifests: GET by tag gives the index with its media
    type, and each child manifest is pullable by the digest the index names."""
    children = []
    for arch in ("amd64", "arm64"):
        config = config_blob(architecture=arch)
        layer = random_blob()
        await oci.upload_all(repo, config, layer)
        children.append(await oci.push(repo, None, image_manifest(config, [layer])))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        child.descriptor(platform={"architecture": arch, "os": "linux"})
        for child, arch in zip(children, ("amd64", "arm64"), strict=True)]}
    pushed = await oci.push(repo, "multi", index)
    answer = await oci.get(f"/v2/{repo}/manifests/multi",
                           headers={"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"})
    assert answer.status == 200, answer
    assert answer.headers["Content-Type"] == OCI_INDEX
    assert answer.headers["Docker-Content-Digest"] == pushed.digest
    assert answer.body == pushed.body
    for entry, child in zip(answer.json()["manifests"], children, strict=True):
        got = await oci.get(f"/v2/{repo}/manifests/{entry['digest']}",
                            headers={"Accept": OCI_MANIFEST})
        assert got.status == 200, got
        assert got.body == child.body
        assert got.headers["Content-Type"] == OCI_MANIFEST


async def test_zero_length_blob_is_served(oci: OciClient, repo: str) -> None:
    """A zero-length blob (sha256 of no bytes) is accepted and served as an empty blob: HEAD 200
    with Content-Length 0, GET 200 with an empty body and its digest (the gateway answers it
    itself: ECR cannot store an empty layer)."""
    empty = await oci.upload(repo, Blob(b""))
    head = await oci.head(f"/v2/{repo}/blobs/{empty.digest}")
    assert head.status == 200, head
    assert head.headers["Content-Length"] == "0"
    assert head.headers["Docker-Content-Digest"] == empty.digest
    answer = await oci.get(f"/v2/{repo}/blobs/{empty.digest}")
    assert answer.status == 200, answer
    assert answer.body == b""
    assert answer.headers["Docker-Content-Digest"] == empty.digest


# -- blobs through a proxy-mode gateway --------------------------------------------------------


@pytest.fixture(scope="module")
def proxy_gateway(upstream: EmulatorProcess,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A second gateway on the same emulator that streams blobs instead of redirecting."""
    with GatewayProcess(tmp_path_factory.mktemp("proxy-gateway"),
                        config={"blobs": {"mode": "proxy"}}, upstream_url=upstream.url) as gw:
        yield gw


@pytest.fixture
async def proxied(proxy_gateway: GatewayProcess) -> AsyncIterator[OciClient]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield OciClient(session, proxy_gateway.url)


async def test_blob_streamed_in_proxy_mode(oci: OciClient, proxied: OciClient,
                                           repo: str) -> None:
    """end-2 GET in proxy mode: the gateway itself answers 200 with the bytes, Content-Length
    and Docker-Content-Digest, and 206 with Content-Range for a range."""
    image = await oci.push_image(repo, "v1", layer_size=4096)
    layer = image.blobs[1]
    answer = await proxied.get(f"/v2/{repo}/blobs/{layer.digest}")
    assert answer.status == 200, answer
    assert answer.body == layer.data
    assert answer.headers["Docker-Content-Digest"] == layer.digest
    assert answer.headers["Content-Length"] == str(layer.size)

    async def fetch(headers: dict[str, str]) -> Answer:
        return await proxied.get(f"/v2/{repo}/blobs/{layer.digest}", headers=headers)

    await _check_ranges(fetch, layer)
    assert_error(await proxied.get(f"/v2/{repo}/blobs/{UNKNOWN_DIGEST}"), 404, "BLOB_UNKNOWN")
