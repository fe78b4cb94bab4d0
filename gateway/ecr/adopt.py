"""Spools across replicas: an upload continued on another replica first takes over the spool
of the one before, and an upload finished on another replica is kept by the spool's holder.

A balancer that spreads one client's requests over replicas sends the PATCHes of a chunked
upload (or a PUT carrying the last chunk) to different replicas. Each replica spools only
what it received, so without help no spool would hold the whole blob and it could not be
read back before a manifest references it (ECR serves only referenced layers). The replica
that holds every byte so far is recorded with the session (gateway/state/peers.py); the one
continuing the upload copies that spool from it (``GET /_peer/spool/<upload>``, the same
HMAC proof as staged blobs) before it appends the new bytes, and so becomes the holder. A
replica that held every byte once before copies only the bytes received elsewhere since
(its own spool is the upload's first bytes: each replica copies at most the blob once,
however the requests alternate).

docker's PATCH and its empty PUT may land on different replicas: the one finishing the upload
asks the spool's holder (``HEAD /_peer/staged/<digest>?upload=<id>``, in the background) to
keep the spool under its digest at once, once it hashes to it. It is then one of the holder's
staged blobs (served, evicted, announced again after a Redis restart) rather than a spool
left behind until the holder restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from gateway.oci.errors import OciError
from gateway.state.peers import PROOF_HEADER, StagedPeers, spool_subject

log = logging.getLogger(__name__)


async def adopt_spool(peers: StagedPeers, http: aiohttp.ClientSession, spool: Path,
                      upload_id: str, received: Callable[[], Awaitable[int]],
                      held: int | None = None) -> None:
    """Make ``spool`` hold the upload's bytes received so far, copied from the replica whose
    spool holds them all, when that is another replica. ``held``: the spool's size when this
    replica last held every byte (those bytes are the upload's: only the rest is copied).
    Best effort: on any failure the upload goes on and is simply not staged here."""
    holder = await peers.spool_holder(upload_id)
    if holder is None or holder == peers.self_url:
        return
    size = await received()
    have = await asyncio.to_thread(_size, spool)
    if size == 0 or have == size:
        return
    start = held if held is not None and have == held and held < size else 0
    try:
        proof = await peers.proof(spool_subject(upload_id))
    except OciError:  # Redis gone since the lookup: not staged here, as for any failure
        log.info("spool of %s not adopted from %s: no proof", upload_id, holder)
        return
    headers = {PROOF_HEADER: proof, "Range": f"bytes={start}-{size - 1}"}
    # A whole copy goes to a new file, replacing the spool only once complete; the rest of
    # one is appended, and cut off again if it does not arrive whole.
    target = spool.with_name(spool.name + ".adopting") if start == 0 else spool
    copied = 0
    try:
        async with http.get(f"{holder}/_peer/spool/{upload_id}", headers=headers,
                            allow_redirects=False) as answer:
            if answer.status not in (200, 206) or (start and answer.status != 206):
                log.info("spool of %s not adopted: %s answered %d", upload_id, holder,
                         answer.status)
                return
            handle = await asyncio.to_thread(open, target, "wb" if start == 0 else "r+b")
            try:
                await asyncio.to_thread(handle.seek, start)
                async for chunk in answer.content.iter_chunked(1 << 20):
                    copied += len(chunk)
                    await asyncio.to_thread(handle.write, chunk)
            finally:
                await asyncio.to_thread(handle.close)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        log.info("spool of %s not adopted from %s: %s", upload_id, holder, type(exc).__name__)
    finally:
        complete = copied == size - start
        if start == 0:
            if complete:
                await asyncio.to_thread(os.replace, target, spool)
            await asyncio.to_thread(target.unlink, True)
        elif not complete:
            await asyncio.to_thread(_cut, spool, start)


def _cut(path: Path, size: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.truncate(path, size)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


_SETTLING: set[asyncio.Task[None]] = set()


def settle_spool(peers: StagedPeers, http: aiohttp.ClientSession, holder: str, digest: str,
                 upload_id: str) -> None:
    """Have ``holder`` keep the finished upload's spool as the staged blob ``digest``."""
    task = asyncio.create_task(_settle(peers, http, holder, digest, upload_id))
    _SETTLING.add(task)
    task.add_done_callback(_SETTLING.discard)


async def _settle(peers: StagedPeers, http: aiohttp.ClientSession, holder: str, digest: str,
                  upload_id: str) -> None:
    try:
        async with http.head(f"{holder}/_peer/staged/{digest}?upload={upload_id}",
                             headers={PROOF_HEADER: await peers.proof(digest)},
                             allow_redirects=False) as answer:
            if answer.status != 200:
                log.info("%s did not keep the spool of %s: %d", holder, upload_id,
                         answer.status)
    except (TimeoutError, aiohttp.ClientError, OciError) as exc:  # OciError: no proof
        log.info("%s not asked to keep the spool of %s: %s", holder, upload_id,
                 type(exc).__name__)
