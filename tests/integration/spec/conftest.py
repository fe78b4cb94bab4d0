"""Fixtures for the distribution-spec 1.1 workflow tests (pull, push, discovery, management).

Every test talks plain HTTP to a real gateway process (``gateway`` from tests/conftest.py)
which talks the AWS protocol to a real emulator process. ``oci`` is a thin client on an
aiohttp session: it returns each answer whole (status, headers, body) and never follows a
redirect unless asked, so tests see exactly what the gateway said. The helpers upload
blobs and push manifests the way a registry client does, checking each step's status.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import aiohttp
import pytest
from multidict import CIMultiDictProxy
from yarl import URL

from tests.support.gateway import GatewayProcess

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
EMPTY_JSON_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# distribution-spec 1.1 "Error Codes": "The code field MUST be one of the following".
SPEC_ERROR_CODES = frozenset({
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID",
    "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED", "DENIED", "UNSUPPORTED",
    "TOOMANYREQUESTS",
})
# "containing only uppercase alphabetic characters and underscores"
_CODE_SHAPE = re.compile(r"^[A-Z_]+$")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str = OCI_LAYER

    @property
    def digest(self) -> str:
        return sha256(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, media_type: str | None = None, **extra: Any) -> dict[str, Any]:
        return {"mediaType": media_type or self.media_type, "digest": self.digest,
                "size": self.size, **extra}


def random_blob(size: int = 64, media_type: str = OCI_LAYER) -> Blob:
    return Blob(os.urandom(size), media_type)


def config_blob(**fields: Any) -> Blob:
    """A unique image config (a random author keeps digests apart between tests)."""
    doc = {"architecture": "amd64", "os": "linux", "author": os.urandom(8).hex(),
           "rootfs": {"type": "layers", "diff_ids": []}, **fields}
    return Blob(json.dumps(doc, indent=2).encode(), OCI_CONFIG)


def empty_config() -> Blob:
    return Blob(EMPTY_JSON, OCI_EMPTY)


def image_manifest(config: Blob, layers: list[Blob], *, artifact_type: str | None = None,
                   subject: Mapping[str, Any] | None = None,
                   annotations: Mapping[str, str] | None = None,
                   config_media_type: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact_type:
        doc["artifactType"] = artifact_type
    doc["config"] = config.descriptor(config_media_type)
    doc["layers"] = [layer.descriptor() for layer in layers]
    if subject is not None:
        doc["subject"] = dict(subject)
    if annotations:
        doc["annotations"] = dict(annotations)
    return doc


def encode(doc: Mapping[str, Any]) -> bytes:
    """Manifests are pushed pretty-printed, so the exact bytes matter (and are checked)."""
    return json.dumps(doc, indent=3).encode()


@dataclass
class Answer:
    """One HTTP answer, read whole."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")

    def __repr__(self) -> str:  # shows in assertion messages
        return f"<Answer {self.status} {dict(self.headers)!r} {self.body[:300]!r}>"


@dataclass
class Pushed:
    """A manifest the registry accepted."""

    body: bytes
    media_type: str
    digest: str
    answer: Answer
    blobs: list[Blob] = field(default_factory=list)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.body),
                **extra}


class OciClient:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    def url(self, path_or_location: str) -> str:
        """Locations may be absolute or relative (end-4a); resolve them against the base."""
        return urljoin(self.base + "/", path_or_location)

    async def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                      data: bytes | None = None, headers: Mapping[str, str] | None = None,
                      follow: bool = False) -> Answer:
        url = URL(self.url(path), encoded=True)
        if params:
            url = url.update_query(params)  # keep any query the registry put in a Location
        async with self.session.request(method, url, data=data, headers=dict(headers or {}),
                                        allow_redirects=follow) as response:
            body = await response.read()
            return Answer(response.status, response.headers, body, response.url)

    async def get(self, path: str, **kw: Any) -> Answer:
        return await self.request("GET", path, **kw)

    async def head(self, path: str, **kw: Any) -> Answer:
        return await self.request("HEAD", path, **kw)

    async def post(self, path: str, **kw: Any) -> Answer:
        return await self.request("POST", path, **kw)

    async def put(self, path: str, **kw: Any) -> Answer:
        return await self.request("PUT", path, **kw)

    async def patch(self, path: str, **kw: Any) -> Answer:
        return await self.request("PATCH", path, **kw)

    async def delete(self, path: str, **kw: Any) -> Answer:
        return await self.request("DELETE", path, **kw)

    # -- blobs ------------------------------------------------------------------------------

    async def start_upload(self, repo: str) -> Answer:
        answer = await self.post(f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
        assert answer.status == 202, answer
        assert answer.location, answer
        return answer

    async def upload(self, repo: str, blob: Blob) -> Blob:
        """POST then PUT (monolithic), as the conformance setup pushes every blob."""
        started = await self.start_upload(repo)
        done = await self.put(started.location, params={"digest": blob.digest}, data=blob.data,
                              headers={"Content-Type": "application/octet-stream"})
        assert done.status == 201, done
        return blob

    async def upload_all(self, repo: str, *blobs: Blob) -> list[Blob]:
        return [await self.upload(repo, blob) for blob in blobs]

    async def fetch_blob(self, repo: str, digest: str,
                         headers: Mapping[str, str] | None = None) -> Answer:
        """GET a blob as a client does: following the gateway's redirect, if it sends one."""
        return await self.get(f"/v2/{repo}/blobs/{digest}", headers=headers, follow=True)

    # -- manifests --------------------------------------------------------------------------

    async def put_manifest(self, repo: str, reference: str, doc: Mapping[str, Any] | bytes,
                           media_type: str | None = None) -> Answer:
        body = doc if isinstance(doc, bytes) else encode(doc)
        if media_type is None:
            media_type = json.loads(body).get("mediaType", OCI_MANIFEST)
        return await self.put(f"/v2/{repo}/manifests/{reference}", data=body,
                              headers={"Content-Type": media_type})

    async def push(self, repo: str, reference: str | None, doc: Mapping[str, Any] | bytes,
                   media_type: str | None = None) -> Pushed:
        """Push a manifest (by tag, or by its digest when ``reference`` is None); expect 201."""
        body = doc if isinstance(doc, bytes) else encode(doc)
        media_type = media_type or json.loads(body).get("mediaType", OCI_MANIFEST)
        answer = await self.put_manifest(repo, reference or sha256(body), body, media_type)
        assert answer.status == 201, answer
        return Pushed(body, media_type, sha256(body), answer)

    async def push_image(self, repo: str, tag: str | None = None, *, layers: int = 1,
                         layer_size: int = 128, **manifest: Any) -> Pushed:
        """Upload a fresh config and layers, then push their image manifest."""
        config = config_blob()
        blobs = [random_blob(layer_size) for _ in range(layers)]
        await self.upload_all(repo, config, *blobs)
        pushed = await self.push(repo, tag, image_manifest(config, blobs, **manifest))
        pushed.blobs = [config, *blobs]
        return pushed


def assert_error(answer: Answer, status: int, *codes: str) -> dict[str, Any]:
    """The spec's error body: ``{"errors": [{"code", "message", "detail"}]}``.

    "A 4XX response code from the registry MAY return a body in any format. If the response
    body is in JSON format, it MUST have the following format" — the gateway always sends
    JSON, so the shape is checked on every error, and the code against ``codes`` if given.
    """
    assert answer.status == status, answer
    assert answer.headers.get("Content-Type", "").startswith("application/json"), answer
    body = answer.json()
    assert isinstance(body, dict) and isinstance(body.get("errors"), list), body
    assert body["errors"], body
    for entry in body["errors"]:
        assert isinstance(entry, dict), body
        assert isinstance(entry.get("code"), str) and _CODE_SHAPE.match(entry["code"]), body
        # "The message field is OPTIONAL, and if present, it SHOULD be a human readable string"
        assert isinstance(entry.get("message", ""), str), body
    if codes:
        assert body["errors"][0]["code"] in codes, body
        for code in codes:
            if code in SPEC_ERROR_CODES:
                continue
            raise AssertionError(f"test asks for {code}, which is not in the spec's table")
    return body


@pytest.fixture
async def oci(gateway: GatewayProcess) -> AsyncIterator[OciClient]:
    # auto_decompress off: blob bytes are compared exactly as served.
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield OciClient(session, gateway.url)
