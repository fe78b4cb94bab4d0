"""OCI uploads as ECR layer uploads: a byte stream of any shape cut into ECR's ordered parts.

Bytes are buffered only up to one part (ECR's ``partSize``, 10 MiB by default) per request,
and at most one part is in flight while the next fills. At the end of a request, what is
left is sent as a part if it is at least ECR's 5 MiB minimum; otherwise it waits in the
session store as the tail, because only the final part of a layer may be smaller.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from gateway.ecr.calls import call
from gateway.ecr.errors import EcrError
from gateway.ecr.retry import RetryPolicy
from gateway.ecr.routing import Target
from gateway.ecr.staging import StagingStore
from gateway.oci import errors as oci
from gateway.oci.backend import UploadStatus
from gateway.oci.digests import EMPTY_SHA256
from gateway.oci.errors import OciError
from gateway.oci.ranges import upload_range_header
from gateway.state.sessions import SessionStore, UploadSession

log = logging.getLogger(__name__)

MIN_PART = 5 * 1024 * 1024  # every part but the last (LayerPartTooSmallException)
MAX_PART = 20 * 1024 * 1024  # UploadLayerPart's layerPartBlob limit

# A client that goes away mid-body surfaces as one of these while the body is read.
_CLIENT_GONE = (aiohttp.ClientError, ConnectionError, asyncio.IncompleteReadError)


class UploadManager:
    def __init__(self, store: SessionStore, staging: StagingStore, policy: RetryPolicy,
                 client_for: Callable[[Target], Any]) -> None:
        self._store = store
        self._staging = staging
        self._policy = policy
        self._client_for = client_for

    async def _call(self, target: Target, action: str, **params: Any) -> dict[str, Any]:
        client = await self._client_for(target)
        return await call(client, action, self._policy, **target.ids(), **params)

    async def start(self, name: str, target: Target) -> UploadSession:
        answer = await self._call(target, "InitiateLayerUpload")
        part_size = min(max(int(answer.get("partSize") or 10 * 1024 * 1024), MIN_PART), MAX_PART)
        session = UploadSession(
            id=uuid.uuid4().hex, name=name, repository=target.repository,
            registry_id=target.registry_id, route=target.route.prefix,
            ecr_upload_id=answer["uploadId"], part_size=part_size)
        await self._store.create(session)
        return session

    async def _session(self, name: str, upload_id: str) -> UploadSession:
        session = await self._store.get(upload_id)
        if session is None or session.name != name:
            raise OciError(oci.BLOB_UPLOAD_UNKNOWN, {"upload": upload_id})
        return session

    async def status(self, name: str, upload_id: str) -> UploadStatus:
        session = await self._session(name, upload_id)
        return UploadStatus(session.id, session.received)

    async def _send_part(self, target: Target, session: UploadSession, part: bytes) -> None:
        first = session.committed
        last = first + len(part) - 1
        try:
            await self._call(target, "UploadLayerPart", uploadId=session.ecr_upload_id,
                             partFirstByte=first, partLastByte=last, layerPartBlob=part)
        except EcrError as exc:
            # A retry of a part that did land is refused as out of order; ECR's
            # lastValidByteReceived tells whether it is in fact already stored.
            landed = exc.response.get("lastValidByteReceived")
            if exc.code != "InvalidLayerPartException" or landed != last:
                raise
        session.committed = last + 1

    async def write(self, name: str, upload_id: str, target: Target,
                    chunks: AsyncIterator[bytes], start: int | None) -> UploadStatus:
        async with self._store.lock(upload_id):
            session = await self._session(name, upload_id)
            if start is not None and start != session.received:
                raise OciError(oci.RANGE_INVALID, {"expected_start": session.received,
                                                   "got": start},
                               message="chunk does not start where the upload stands",
                               headers={"Range": upload_range_header(session.received),
                                        "Location": f"/v2/{name}/blobs/uploads/{upload_id}"})
            buffer = bytearray(await self._store.tail(upload_id))
            await self._pump(target, session, buffer, chunks)
            return UploadStatus(session.id, session.received)

    async def _pump(self, target: Target, session: UploadSession, buffer: bytearray,
                    chunks: AsyncIterator[bytes]) -> None:
        """Move a request body into parts; always leave the store consistent."""
        size = session.part_size
        in_flight: asyncio.Task[None] | None = None
        sending = b""
        failure: BaseException | None = None
        try:
            async for chunk in chunks:
                # Request chunks are small (socket reads), so a page-cache write is cheap.
                self._staging.append(session.id, session.received, chunk)
                buffer += chunk
                session.received += len(chunk)
                while len(buffer) >= size:
                    if in_flight is not None:
                        await in_flight
                    sending = bytes(buffer[:size])
                    del buffer[:size]
                    in_flight = asyncio.create_task(self._send_part(target, session, sending))
        except _CLIENT_GONE:
            log.info("client went away mid-body on upload %s at %d", session.id,
                     session.received)
        except BaseException as exc:
            failure = exc
        # The part in flight must settle before the record is written.
        if in_flight is not None:
            try:
                await in_flight
            except BaseException as exc:
                buffer[:0] = sending  # not stored upstream: it is tail again
                failure = failure or exc
        if failure is None and len(buffer) >= MIN_PART:
            try:
                await self._send_part(target, session, bytes(buffer))
                buffer.clear()
            except BaseException as exc:
                failure = exc
        session.updated_at = time.time()
        await self._store.save(session, bytes(buffer))
        if failure is not None:
            raise failure

    async def finish(self, name: str, upload_id: str, target: Target, digest: str) -> None:
        async with self._store.lock(upload_id):
            session = await self._session(name, upload_id)
            if not digest.startswith("sha256:"):
                await self._abandon(session)
                raise OciError(oci.DIGEST_INVALID, {"digest": digest},
                               message="ECR stores sha256 digests only")
            tail = await self._store.tail(upload_id)
            if tail:
                await self._send_part(target, session, tail)
                await self._store.save(session, b"")
            if session.received == 0:
                await self._abandon(session)
                if digest != EMPTY_SHA256:
                    raise OciError(oci.DIGEST_INVALID, {"digest": digest},
                                   message="digest does not match the (empty) content")
                return  # the empty blob is answered by the gateway itself
            try:
                await self._call(target, "CompleteLayerUpload",
                                 uploadId=session.ecr_upload_id, layerDigests=[digest])
            except EcrError as exc:
                if exc.code != "LayerAlreadyExistsException":
                    if exc.code in ("InvalidLayerException", "UploadNotFoundException",
                                    "EmptyUploadException", "LayerPartTooSmallException"):
                        await self._abandon(session)
                    raise
            await asyncio.to_thread(self._staging.promote, session.id, digest, session.received)
            await self._store.delete(session.id)

    async def _abandon(self, session: UploadSession) -> None:
        self._staging.discard(session.id)
        await self._store.delete(session.id)

    async def expire_idle(self, idle_seconds: float) -> int:
        """Drop sessions no request has touched for ``idle_seconds``; returns how many."""
        dropped = 0
        for session in await self._store.idle(time.time() - idle_seconds):
            async with self._store.lock(session.id):
                await self._abandon(session)
                dropped += 1
        if dropped:
            log.info("dropped %d idle upload sessions", dropped)
        return dropped

    async def cancel(self, name: str, upload_id: str) -> None:
        async with self._store.lock(upload_id):
            session = await self._session(name, upload_id)
            # ECR has no action to abort an upload; its upload simply expires unused.
            await self._abandon(session)
