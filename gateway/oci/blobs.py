"""Blob reads: HEAD and GET (redirect, proxy or local file), and DELETE (unsupported by ECR)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from gateway.blobcache import BlobFill
from gateway.oci.context import BLOB_CACHE, HTTP_CLIENT, registry, settings
from gateway.oci.digests import parse_digest
from gateway.oci.errors import BLOB_UNKNOWN, RANGE_INVALID, UNAVAILABLE, UNSUPPORTED, OciError
from gateway.oci.ranges import parse_file_range
from gateway.state.peers import PROOF_HEADER

_OCTET = "application/octet-stream"
# Headers of the upstream answer that describe the bytes and so pass through in proxy mode.
_PASSED = ("Content-Length", "Content-Range", "Accept-Ranges", "ETag", "Last-Modified")


async def head_blob(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    parse_digest(digest)
    size = await registry(request).stat_blob(name, digest)
    if size is None:
        raise OciError(BLOB_UNKNOWN, {"digest": digest})
    return web.Response(status=200, headers={
        "Content-Length": str(size), "Docker-Content-Digest": digest,
        "Content-Type": _OCTET, "Accept-Ranges": "bytes"})


async def get_blob(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    parse_digest(digest)
    backend = registry(request)
    headers = {"Docker-Content-Digest": digest, "Content-Type": _OCTET}
    cache = request.app.get(BLOB_CACHE)  # proxy mode only
    if cache is not None:
        # The cache holds bytes by digest for every repository; whether this repository
        # may read them is the backend's answer (usually known without an upstream call).
        cached = await cache.open(digest)
        if cached is not None and await backend.stat_blob(name, digest) is not None:
            parse_file_range(request.headers.get("Range"), cached.size)
            return web.FileResponse(cached.path, headers=headers)
    location = await backend.locate_blob(name, digest)
    if location.path is not None:
        # Validate the range ourselves so a bad one gets the OCI error body.
        parse_file_range(request.headers.get("Range"), location.size)
        return web.FileResponse(location.path, headers=headers)
    assert location.url is not None
    if location.peer_proof is not None:  # another replica's staged copy: never redirected
        return await _from_peer(request, location.url, location.peer_proof, headers)
    if settings(request).blob_mode == "redirect":
        headers["Location"] = location.url
        return web.Response(status=307, headers=headers)
    return await _proxy(request, name, digest, location.url, headers)


async def _proxy(
    request: web.Request, name: str, digest: str, url: str, headers: dict[str, str]
) -> web.StreamResponse:
    client = request.app[HTTP_CLIENT]
    upstream_headers = {"Range": request.headers["Range"]} if "Range" in request.headers else {}
    for attempt in range(2):
        upstream = await client.get(url, headers=upstream_headers)
        # An expired or revoked URL answers 403: ask for a fresh one once.
        if upstream.status == 403 and attempt == 0:
            upstream.release()
            url = (await registry(request).locate_blob(name, digest, fresh=True)).url or url
            continue
        break
    # A whole read (not a Range) fills the blob cache as it streams to the client.
    fill: BlobFill | None = None
    cache = request.app.get(BLOB_CACHE)
    if cache is not None and upstream.status == 200:
        fill = cache.start_fill(digest, upstream.content_length)
    try:
        return await _relay(request, upstream, headers, fill)
    finally:
        if fill is not None:
            fill.abort()  # no-op once committed


async def _from_peer(request: web.Request, url: str, proof: str,
                     headers: dict[str, str]) -> web.StreamResponse:
    upstream_headers = {PROOF_HEADER: proof}
    if "Range" in request.headers:
        upstream_headers["Range"] = request.headers["Range"]
    try:
        upstream = await request.app[HTTP_CLIENT].get(url, headers=upstream_headers)
    except aiohttp.ClientError as exc:
        raise OciError(UNAVAILABLE, {"reason": "the replica holding the blob is unreachable"},
                       headers={"Retry-After": "1"}) from exc
    if upstream.status == 404:  # evicted there meanwhile
        upstream.release()
        raise OciError(BLOB_UNKNOWN, {"digest": headers["Docker-Content-Digest"]})
    return await _relay(request, upstream, headers, None)


async def _relay(request: web.Request, upstream: aiohttp.ClientResponse,
                 headers: dict[str, str], fill: BlobFill | None) -> web.StreamResponse:
    async with upstream:
        if upstream.status == 416:
            raise OciError(RANGE_INVALID,
                           headers={k: upstream.headers[k] for k in ("Content-Range",)
                                    if k in upstream.headers})
        if upstream.status not in (200, 206):
            raise OciError(UNAVAILABLE, {"upstream_status": upstream.status},
                           message="upstream blob storage refused the read",
                           headers={"Retry-After": "1"})
        for key in _PASSED:
            if key in upstream.headers:
                headers[key] = upstream.headers[key]
        response = web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        # With a fill, the last chunk is held back until the copy has been verified and
        # admitted: a client that has the whole blob finds it cached on its next read.
        held = b""
        async for chunk in upstream.content.iter_chunked(1 << 20):
            if fill is None:
                await response.write(chunk)
                continue
            await fill.write(chunk)
            if held:
                await response.write(held)
            held = chunk
        if fill is not None:
            await fill.commit()
            if held:
                await response.write(held)
        await response.write_eof()
        return response


async def delete_blob(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    parse_digest(digest)
    raise OciError(UNSUPPORTED, {"reason": "ECR removes layers with the images that use them"},
                   message="blob deletion is not supported; delete the manifests instead")
