"""``GET /_peer/staged/<digest>``: this replica's staged copy of a blob, for another replica
that proves it shares this one's Redis (gateway/state/peers.py). Not part of the OCI API."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from aiohttp import web

from gateway.oci.digests import parse_digest
from gateway.oci.errors import BLOB_UNKNOWN, DENIED, OciError
from gateway.oci.ranges import parse_file_range
from gateway.state.peers import PROOF_HEADER, StagedPeers

# This replica's staged-blob registry (set with state.backend redis).
STAGED_PEERS = web.AppKey("staged_peers", StagedPeers)


class StagedSource(Protocol):
    async def staged_for_peer(self, digest: str, upload: str) -> Path | None: ...


def add_peer_route(app: web.Application, source: StagedSource, peers: StagedPeers) -> None:
    app[STAGED_PEERS] = peers

    async def staged_blob(request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        parse_digest(digest)
        proof = request.headers.get(PROOF_HEADER, "")
        if not proof or not await peers.check(digest, proof):
            raise OciError(DENIED, {"reason": "not a replica of this gateway"})
        path = await source.staged_for_peer(digest, request.query.get("upload", ""))
        if path is None:
            raise OciError(BLOB_UNKNOWN, {"digest": digest})
        parse_file_range(request.headers.get("Range"), path.stat().st_size)
        return web.FileResponse(path, headers={"Docker-Content-Digest": digest,
                                               "Content-Type": "application/octet-stream"})

    app.router.add_get("/_peer/staged/{digest}", staged_blob)
