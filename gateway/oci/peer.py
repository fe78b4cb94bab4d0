"""``GET /_peer/staged/<digest>``: this replica's staged copy of a blob, for another replica
that proves it shares this one's Redis (gateway/state/peers.py). Not part of the OCI API."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.oci.context import registry
from gateway.oci.digests import parse_digest
from gateway.oci.errors import BLOB_UNKNOWN, DENIED, OciError
from gateway.oci.ranges import parse_file_range
from gateway.state.peers import PROOF_HEADER


async def staged_blob(request: web.Request) -> web.StreamResponse:
    digest = request.match_info["digest"]
    parse_digest(digest)
    proof = request.headers.get(PROOF_HEADER, "")
    backend: Any = registry(request)
    if not proof or backend.peers is None or not await backend.peers.check(digest, proof):
        raise OciError(DENIED, {"reason": "not a replica of this gateway"})
    path = await backend.staged_for_peer(digest, request.query.get("upload", ""))
    if path is None:
        raise OciError(BLOB_UNKNOWN, {"digest": digest})
    parse_file_range(request.headers.get("Range"), path.stat().st_size)
    return web.FileResponse(path, headers={"Docker-Content-Digest": digest,
                                           "Content-Type": "application/octet-stream"})


def add_peer_route(app: web.Application) -> None:
    app.router.add_get("/_peer/staged/{digest}", staged_blob)
