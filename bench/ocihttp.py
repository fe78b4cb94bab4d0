"""A small OCI distribution client on aiohttp, for the rows that need many uploads at once
(memory, concurrency, leak checks), where one skopeo process per upload would measure
skopeo. Uploads are what docker sends: POST, one streamed PATCH, PUT with the digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import aiohttp

OCTET = "application/octet-stream"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
ACCEPT = ", ".join((OCI_MANIFEST, "application/vnd.oci.image.index.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json"))


class PushError(RuntimeError):
    pass


@dataclass
class Pushed:
    digest: str
    size: int


def session(connections: int = 128) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, force_close=False),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300),
        auto_decompress=False)


async def _check(response: aiohttp.ClientResponse, expected: int, what: str) -> None:
    if response.status != expected:
        raise PushError(f"{what}: HTTP {response.status} {(await response.text())[:300]}")


async def start_upload(http: aiohttp.ClientSession, base: str, repo: str) -> str:
    async with http.post(f"{base}/v2/{repo}/blobs/uploads/") as response:
        await _check(response, 202, "POST upload")
        return _absolute(base, response.headers["Location"])


async def patch(http: aiohttp.ClientSession, base: str, location: str,
                body: bytes | AsyncIterator[bytes], length: int) -> str:
    headers = {"Content-Type": OCTET, "Content-Length": str(length)}
    async with http.patch(location, data=body, headers=headers) as response:
        await _check(response, 202, "PATCH upload")
        return _absolute(base, response.headers["Location"])


async def finish(http: aiohttp.ClientSession, base: str, location: str, digest: str) -> None:
    sep = "&" if "?" in location else "?"
    async with http.put(f"{location}{sep}digest={digest}",
                        headers={"Content-Length": "0"}) as response:
        await _check(response, 201, "PUT upload")


async def push_blob(http: aiohttp.ClientSession, base: str, repo: str,
                    chunks: Iterable[bytes], size: int, digest: str) -> Pushed:
    """One blob as one streamed PATCH (docker's way), then PUT ?digest=."""
    location = await start_upload(http, base, repo)

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    location = await patch(http, base, location, body(), size)
    await finish(http, base, location, digest)
    return Pushed(digest, size)


async def push_bytes(http: aiohttp.ClientSession, base: str, repo: str, data: bytes) -> Pushed:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return await push_blob(http, base, repo, [data], len(data), digest)


async def put_manifest(http: aiohttp.ClientSession, base: str, repo: str, tag: str,
                       config: Pushed, layers: list[Pushed]) -> str:
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer.digest, "size": layer.size}
                   for layer in layers],
    }).encode()
    async with http.put(f"{base}/v2/{repo}/manifests/{tag}", data=manifest,
                        headers={"Content-Type": OCI_MANIFEST}) as response:
        await _check(response, 201, "PUT manifest")
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


async def pull_blob(http: aiohttp.ClientSession, base: str, repo: str, digest: str,
                    *, verify: bool = True) -> int:
    """GET a blob (following a redirect, as clients do); returns its size."""
    hasher = hashlib.sha256()
    size = 0
    async with http.get(f"{base}/v2/{repo}/blobs/{digest}") as response:
        await _check(response, 200, f"GET blob {digest[:19]}")
        async for chunk in response.content.iter_chunked(1 << 20):
            size += len(chunk)
            if verify:
                hasher.update(chunk)
    if verify and "sha256:" + hasher.hexdigest() != digest:
        raise PushError(f"blob {digest[:19]} read back with another digest")
    return size


async def head_manifest(http: aiohttp.ClientSession, base: str, repo: str, ref: str) -> int:
    async with http.head(f"{base}/v2/{repo}/manifests/{ref}",
                         headers={"Accept": ACCEPT}) as response:
        return response.status


def _absolute(base: str, location: str) -> str:
    return location if location.startswith("http") else base + location
