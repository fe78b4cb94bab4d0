"""``GET /_peer/staged/<digest>``: this replica's staged copy of a blob,
``GET /_peer/cached/<digest>``: its blob cache's copy (proxy mode, gateway/state/fills.py),
and ``GET /_peer/spool/<upload>``: the spool of an upload in progress (gateway/ecr/adopt.py),
for another replica that proves it shares this one's Redis (gateway/state/peers.py). Not
part of the OCI API."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Protocol

from aiohttp import web

from gateway.oci.context import BLOB_CACHE
from gateway.oci.digests import parse_digest
from gateway.oci.errors import BLOB_UNKNOWN, BLOB_UPLOAD_UNKNOWN, DENIED, OciError
from gateway.oci.files import send_file
from gateway.state.peers import PROOF_HEADER, StagedPeers, spool_subject

# This replica's staged-blob registry (set with state.backend redis).
STAGED_PEERS = web.AppKey("staged_peers", StagedPeers)


class StagedSource(Protocol):
    async def staged_for_peer(self, digest: str, upload: str) -> Path | None: ...

    def spool_for_peer(self, upload: str) -> Path | None: ...


def add_peer_route(app: web.Application, source: StagedSource, peers: StagedPeers) -> None:
    app[STAGED_PEERS] = peers

    async def check_peer(request: web.Request, subject: str) -> None:
        proof = request.headers.get(PROOF_HEADER, "")
        if not proof or not await peers.check(subject, proof):
            raise OciError(DENIED, {"reason": "not a replica of this gateway"})

    async def peer_digest(request: web.Request) -> str:
        digest = request.match_info["digest"]
        parse_digest(digest)
        await check_peer(request, digest)
        return digest

    async def staged_blob(request: web.Request) -> web.StreamResponse:
        digest = await peer_digest(request)
        path = await source.staged_for_peer(digest, request.query.get("upload", ""))
        if path is None:
            raise OciError(BLOB_UNKNOWN, {"digest": digest})
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:  # dropped since it was found
            raise OciError(BLOB_UNKNOWN, {"digest": digest}) from None
        # Served as every blob read is (gateway/oci/files.py): the same Range rules.
        return await send_file(request, handle, os.fstat(handle.fileno()).st_size, {
            "Docker-Content-Digest": digest, "Content-Type": "application/octet-stream"})

    async def cached_blob(request: web.Request) -> web.StreamResponse:
        digest = await peer_digest(request)
        cache = request.app.get(BLOB_CACHE)
        cached = await cache.open(digest) if cache is not None else None
        if cached is None:  # evicted since it was recorded
            raise OciError(BLOB_UNKNOWN, {"digest": digest})
        return await send_file(request, cached.file, cached.size, {
            "Docker-Content-Digest": digest, "Content-Type": "application/octet-stream"},
            direct=cached.on_disk)

    async def spool(request: web.Request) -> web.StreamResponse:
        upload = request.match_info["upload"]
        await check_peer(request, spool_subject(upload))
        path = source.spool_for_peer(upload)
        if path is None:
            raise OciError(BLOB_UPLOAD_UNKNOWN, {"upload": upload})
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

    app.router.add_get("/_peer/staged/{digest}", staged_blob)
    app.router.add_get("/_peer/cached/{digest}", cached_blob)
    app.router.add_get("/_peer/spool/{upload}", spool)
