"""Blob reads: HEAD and GET (redirect, proxy or local file), and DELETE (where the backend can)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from pathlib import Path
from typing import BinaryIO

import aiohttp
from aiohttp import web

from gateway.blobcache import BlobFill
from gateway.observability.logs import Sparing, unsaid
from gateway.oci.backend import GrowingBlob
from gateway.oci.context import (
    BLOB_CACHE,
    DOWNLOADS,
    FILL_LOCKS,
    HTTP_CLIENT,
    capabilities,
    registry,
    request_context,
    settings,
)
from gateway.oci.digests import parse_digest
from gateway.oci.download_targets import DownloadRefused, download_refused, storage_unreachable
from gateway.oci.errors import BLOB_UNKNOWN, RANGE_INVALID, UNAVAILABLE, UNSUPPORTED, OciError
from gateway.oci.files import send_file
from gateway.oci.limits import download_slot, downloads_full
from gateway.oci.peer import STAGED_PEERS
from gateway.oci.ranges import asks_range, forwarded_range
from gateway.state.peers import PROOF_HEADER

log = logging.getLogger(__name__)

# A replica refusing this one's proofs says so once a minute (a rolling upgrade would
# otherwise log it on every read).
_REFUSALS = Sparing()

_OCTET = "application/octet-stream"
# Headers of the upstream answer that describe the bytes and so pass through in proxy mode.
_PASSED = ("Content-Length", "Content-Range", "Accept-Ranges", "ETag", "Last-Modified")


class _DigestCheck:
    """The digest check of a whole blob relayed without a cache fill."""

    def __init__(self, digest: str) -> None:
        algorithm, _, self._expected = digest.partition(":")
        self._hash = hashlib.new(algorithm)

    async def write(self, chunk: bytes) -> None:
        await asyncio.to_thread(self._hash.update, chunk)  # hashing releases the GIL

    async def commit(self) -> bool:
        return self._hash.hexdigest() == self._expected

    def abort(self) -> None:
        pass


# What verifies a whole blob as it is relayed: the cache fill this read claimed, else a
# digest check of its own.
_Check = BlobFill | _DigestCheck


async def head_blob(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    parse_digest(digest)
    size = await registry(request).stat_blob(request_context(request), digest)
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
    check: _Check | None = None
    if cache is not None:
        whole = not asks_range(request.headers.get("Range"))
        served: bool | None = None  # storage serves it to this caller (a kept copy may too)

        async def authorize(*, count: bool = True) -> bool:
            # The cache holds bytes by digest for every repository; whether this repository
            # may read them is the backend's answer (usually known without an upstream
            # call), asked before a cached copy, or a fill of one, is touched: a read refused
            # here must not open, verify, reorder or wait for another repository's copy, nor
            # count a hit, any of which would tell the caller that the copy exists.
            # False: the repository holds the blob but storage does not serve it (its
            # images deleted, or pushed and not referenced yet): read as without a cache.
            nonlocal served
            if served is None:
                ctx = request_context(request)
                answer = await backend.serves_kept_copy(ctx, digest)
                if not answer and await backend.stat_blob(ctx, digest) is None:
                    if count:
                        cache.count_refused()
                    raise OciError(BLOB_UNKNOWN, {"digest": digest})
                served = answer
            return served

        while True:
            if cache.known(digest) and not await authorize():
                break
            cached = await cache.open(digest)
            if cached is not None:
                return await send_file(request, cached.file, cached.size, headers,
                                       direct=cached.on_disk)
            if not whole:
                break
            # Fills are shared by digest (this process's claim, every replica's fill lock): a
            # read its repository cannot serve takes none, nor waits for one, or a client
            # reading its own repository would hold back, request after request, the first
            # reads of any blob it can name in repositories it cannot read. A blob read
            # through from an upstream registry is the upstream's to refuse (asking here
            # would wait for its copy).
            if not backend.pulls_through(request_context(request), digest) and \
                    not await authorize(count=False):  # the cache's lookup counted the miss
                break
            # A client streaming its share of downloads already would hold the fill, and every
            # other reader of the blob waiting for it, while it waits for one of its own: it
            # reads on its own.
            if downloads_full(request):
                break
            # One read of a cold blob fetches it; the others wait and take the cached copy
            # (or, if that fill failed or does not keep up, read on their own).
            check = cache.claim(digest)
            if check is not None or not await cache.wait_fill(digest):
                break
    try:
        if isinstance(check, BlobFill) and FILL_LOCKS in request.app:
            return await _read_once(request, name, digest, headers, check)
        return await _read(request, name, digest, headers, check)
    finally:
        if check is not None:
            check.abort()  # no-op once committed


async def _read_once(request: web.Request, name: str, digest: str, headers: dict[str, str],
                     fill: BlobFill) -> web.StreamResponse:
    """A cold blob with replicas: one of them fetches it into its cache, the others wait for
    that and then stream its copy (gateway/state/fills.py), filling their own caches."""
    locks, peers = request.app[FILL_LOCKS], request.app.get(STAGED_PEERS)
    here = peers.self_url if peers is not None else None
    if peers is None or here is None:
        return await _read(request, name, digest, headers, fill)
    holders: list[str] = []

    async def filled_elsewhere() -> bool:
        holders[:] = [url for url in await locks.holders(digest) if url != here]
        return bool(holders)

    # A fill held back by its client (one that stopped reading) gives the lock up: the
    # other replicas then fetch on their own instead of waiting for it.
    cache = request.app[BLOB_CACHE]
    async with locks.first(digest, filled_elsewhere, cache.stall_watch(fill)) as mine:
        if not mine:
            ctx = request_context(request)
            if not await registry(request).serves_kept_copy(ctx, digest):
                if await registry(request).stat_blob(ctx, digest) is None:
                    raise OciError(BLOB_UNKNOWN, {"digest": digest})
                holders.clear()  # held, not served: storage answers, not others' copies
            proof = await peers.proof(digest)
            for holder in holders:
                try:
                    return await _from_peer(request, f"{holder}/_peer/cached/{digest}", proof,
                                            headers, fill)
                except OciError:  # evicted there, or that replica is gone
                    await locks.forget(digest, holder)
        response = await _read(request, name, digest, headers, fill)
        if digest in cache:
            await locks.record(digest, here)
        return response


async def _read(request: web.Request, name: str, digest: str, headers: dict[str, str],
                check: _Check | None) -> web.StreamResponse:
    backend = registry(request)
    location = await backend.locate_blob(request_context(request), digest)
    for _ in range(2):
        if location.growing is None:
            break
        if not asks_range(request.headers.get("Range")):
            if isinstance(check, BlobFill):
                # Storage streams an arriving blob to every reader at once: reads waiting
                # for this one's cache fill go ahead and follow it too.
                check.abort()
            return await _follow(request, location.growing, location.size, headers)
        await location.growing.settled()  # a range is served from the stored blob
        location = await backend.locate_blob(request_context(request), digest)
    if location.path is not None:
        handle = await _open(location.path)
        if handle is None:  # removed since it was found: storage has the final say
            location = await backend.locate_blob(request_context(request), digest)
            handle = await _open(location.path) if location.path is not None else None
        if handle is not None:
            return await send_file(request, handle, location.size, headers,
                                   direct=settings(request).direct_reads)
    url = location.url
    if url is None:
        raise OciError(BLOB_UNKNOWN, {"digest": digest})
    if location.peer_proof is not None:  # another replica's staged copy: never redirected
        if check is None and not asks_range(request.headers.get("Range")):
            check = _DigestCheck(digest)
        try:
            return await _from_peer(request, url, location.peer_proof, headers, check,
                                    location.size)
        except OciError as exc:
            if exc.error is not BLOB_UNKNOWN:
                raise
        # Dropped there meanwhile, most often because an image now references the blob:
        # storage serves it from now on.
        location = await backend.locate_blob(request_context(request), digest, fresh=True)
        url = location.url
        if url is None or location.peer_proof is not None:
            raise OciError(BLOB_UNKNOWN, {"digest": digest})
    if settings(request).blob_mode == "redirect":
        headers["Location"] = url
        return web.Response(status=307, headers=headers)
    if check is None and not asks_range(request.headers.get("Range")):
        check = _DigestCheck(digest)
    return await _proxy(request, name, digest, url, headers, check, location.size)


async def _follow(request: web.Request, growing: GrowingBlob, size: int,
                  headers: dict[str, str]) -> web.StreamResponse:
    """Stream a blob while it arrives. A failure before the first byte is an OCI error;
    after it the connection is cut, before the last bytes (the stream holds them back until
    they are verified)."""
    async with contextlib.aclosing(growing.open()) as chunks:
        first = await anext(chunks, b"")
        response = web.StreamResponse(status=200, headers=headers)
        if size >= 0:
            response.content_length = size
        await response.prepare(request)
        try:
            if first:
                await response.write(first)
            async for chunk in chunks:
                await response.write(chunk)
        except OciError as exc:
            log.warning("read of %s cut off: %s", headers["Docker-Content-Digest"], exc.message)
            if request.transport is not None:
                request.transport.abort()  # the client sees a broken transfer
            return response
        await response.write_eof()
        return response


async def _open(path: Path) -> BinaryIO | None:
    try:
        return await asyncio.to_thread(open, path, "rb")
    except FileNotFoundError:
        return None


async def _proxy(request: web.Request, name: str, digest: str, url: str,
                 headers: dict[str, str], check: _Check | None, size: int) -> web.StreamResponse:
    # One of the client's share of the HTTP client's connections, held until the answer is
    # sent or cut (gateway/oci/limits.py).
    async with download_slot(request):
        downloads = request.app[DOWNLOADS]
        upstream_headers = _range_for(request, size)
        for attempt in range(2):
            try:
                # Followed only where storage's download URLs lead
                # (gateway/oci/download_targets.py).
                upstream = await downloads.get(url, upstream_headers)
            except DownloadRefused as exc:
                raise download_refused(exc) from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise storage_unreachable(exc) from exc
            # An expired or revoked URL answers 403: ask for a fresh one once.
            if upstream.status == 403 and attempt == 0:
                upstream.release()
                fresh = await registry(request).locate_blob(request_context(request), digest,
                                                            fresh=True)
                url = fresh.url or url
                continue
            break
        # A whole read fills the blob cache as it streams to the client (its claimed fill).
        if upstream.status == 200 and isinstance(check, BlobFill):
            await check.start(upstream.content_length)
        return await _relay(request, upstream, headers, check if upstream.status == 200 else None)


def _range_for(request: web.Request, size: int) -> dict[str, str]:
    """The Range header for the storage (or replica) that serves the bytes, as resolved
    here for a blob of ``size`` bytes (-1: not known): the answer is the one a local file
    would give (gateway/oci/ranges.py), a 416 raised before anything is asked."""
    value = forwarded_range(request.headers.get("Range"), size)
    return {} if value is None else {"Range": value}


async def _from_peer(request: web.Request, url: str, proof: str, headers: dict[str, str],
                     check: _Check | None, size: int = -1) -> web.StreamResponse:
    # The replica's answer holds a connection of the same HTTP client.
    async with download_slot(request):
        upstream_headers = {PROOF_HEADER: proof, **_range_for(request, size)}
        try:
            # No redirect: the proof is for the replica asked, and only its answer is relayed.
            upstream = await request.app[HTTP_CLIENT].get(url, headers=upstream_headers,
                                                          allow_redirects=False)
        except aiohttp.ClientError as exc:
            raise OciError(UNAVAILABLE, {"reason": "the replica holding the blob is unreachable"},
                           headers={"Retry-After": "1"}) from exc
        if upstream.status == 404:  # evicted there meanwhile
            upstream.release()
            raise OciError(BLOB_UNKNOWN, {"digest": headers["Docker-Content-Digest"]})
        if upstream.status == 403:
            # Another version (proofs without or with an expiry), or clocks a minute apart:
            # read as from an unreachable replica (a cached blob from storage instead).
            upstream.release()
            holder = url.split("/_peer/", 1)[0]
            left = _REFUSALS.due(holder)
            if left is not None:
                log.warning("replica %s refused this replica's proof (another version, or "
                            "clocks more than a minute apart)%s", holder, unsaid(left))
            raise OciError(UNAVAILABLE, {"reason": "the replica holding the blob refused this one"},
                           headers={"Retry-After": "1"})
        if upstream.status == 200 and isinstance(check, BlobFill):
            await check.start(upstream.content_length)
        return await _relay(request, upstream, headers, check if upstream.status == 200 else None)


async def _relay(request: web.Request, upstream: aiohttp.ClientResponse,
                 headers: dict[str, str], check: _Check | None) -> web.StreamResponse:
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
        # A whole blob is verified as it streams, and its last chunk is held back until
        # the digest matched: a client never receives a complete body of wrong bytes.
        # (With a cache fill the copy is admitted first, so a client that has the whole
        # blob finds it cached on its next read.)
        held = b""
        async for chunk in upstream.content.iter_chunked(1 << 20):
            if check is None:
                await response.write(chunk)
                continue
            await check.write(chunk)
            if held:
                await response.write(held)
            held = chunk
        if check is not None:
            if not await check.commit():
                log.warning("upstream bytes of %s do not match the digest; read cut off",
                            headers["Docker-Content-Digest"])
                if request.transport is not None:
                    request.transport.abort()  # the client sees a broken transfer
                return response
            if held:
                await response.write(held)
        await response.write_eof()
        return response


async def delete_blob(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    parse_digest(digest)
    declared = capabilities(request)
    # No backend deletes blobs on its own yet: each says why, in its own words.
    raise OciError(UNSUPPORTED, {"reason": declared.blob_delete_refusal},
                   message="blob deletion is not supported; delete the manifests instead")
