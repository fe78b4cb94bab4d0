"""A small OCI client over aiohttp for integration tests: uploads of any shape, manifests."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image_manifest(config: bytes, layers: list[bytes]) -> bytes:
    """An OCI image manifest naming ``config`` and ``layers`` by digest and size."""
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(layer), "size": len(layer)}
                   for layer in layers]}).encode()


@dataclass
class Reply:
    """A finished response: status, headers and the whole (small) body."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def error_code(self) -> str:
        return str(json.loads(self.body)["errors"][0]["code"])


class OciClient:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base.rstrip("/")

    def url(self, path: str) -> str:
        return path if path.startswith("http") else self.base + path

    async def start(self, name: str) -> str:
        async with self.session.post(self.url(f"/v2/{name}/blobs/uploads/")) as r:
            assert r.status == 202, await r.text()
            return r.headers["Location"]

    async def patch(self, location: str, data: bytes, start: int | None = None) -> Reply:
        headers = {"Content-Type": "application/octet-stream"}
        if start is not None:
            headers["Content-Range"] = f"{start}-{start + len(data) - 1}"
            headers["Content-Length"] = str(len(data))
        async with self.session.patch(self.url(location), data=data, headers=headers) as r:
            return Reply(r.status, r.headers, await r.read())

    async def put(self, location: str, digest: str, data: bytes = b"") -> Reply:
        sep = "&" if "?" in location else "?"
        async with self.session.put(self.url(f"{location}{sep}digest={digest}"), data=data,
                                    headers={"Content-Type": "application/octet-stream"}) as r:
            return Reply(r.status, r.headers, await r.read())

    async def push_blob(self, name: str, data: bytes, chunk: int | None = None) -> str:
        """Upload ``data`` in PATCHes of ``chunk`` bytes (one PATCH when None)."""
        digest = digest_of(data)
        location = await self.start(name)
        step = chunk or max(len(data), 1)
        for offset in range(0, len(data), step):
            r = await self.patch(location, data[offset:offset + step],
                                 offset if chunk else None)
            assert r.status == 202, r.status
            location = r.headers["Location"]
        r = await self.put(location, digest)
        assert r.status == 201, r.status
        return digest

    async def push_image(self, name: str, tag: str, layers: list[bytes],
                         config: bytes = b'{"architecture":"amd64","os":"linux"}'
                         ) -> tuple[str, bytes]:
        descriptors = []
        for layer in layers:
            descriptors.append({"mediaType": OCI_LAYER, "digest": await self.push_blob(name, layer),
                                "size": len(layer)})
        config_digest = await self.push_blob(name, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": descriptors}).encode()
        async with self.session.put(self.url(f"/v2/{name}/manifests/{tag}"), data=manifest,
                                    headers={"Content-Type": OCI_MANIFEST}) as r:
            assert r.status == 201, await r.text()
            return r.headers["Docker-Content-Digest"], manifest

    async def get_blob(self, name: str, digest: str) -> bytes:
        async with self.session.get(self.url(f"/v2/{name}/blobs/{digest}")) as r:
            assert r.status == 200, (r.status, await r.text())
            return await r.read()
