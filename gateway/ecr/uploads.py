"""OCI uploads as ECR layer uploads: a byte stream of any shape cut into ECR's ordered parts.

Bytes are buffered only up to one part (ECR's ``partSize``, 10 MiB by default) per request,
and at most one part is in flight while the next fills. At the end of a request, what is
left is sent as a part if it is at least ECR's 5 MiB minimum; otherwise it waits in the
session as the tail, because only the final part of a layer may be smaller (in the
staging spool alone when the session store is this process's own: each byte reaches the
disk once). The tail never exceeds one part: when parts fail to reach ECR, the session keeps
at most one part of them and reports the rest as not received (the client continues from
the upload's Range).

Every upload's bytes are checked against the digest once, by whoever must. ECR hashes the
layer at CompleteLayerUpload and refuses a mismatch (InvalidLayerException), except when the
repository already holds that digest: it then answers LayerAlreadyExistsException without
hashing anything, and the gateway hashes its staged copy itself (a second hash on every push
cost the gateway about a sixth of its CPU, for a case clients rarely cause: they check with
HEAD before they push). An upload whose parts did not all go through this process (another
replica, a restart) is hashed from the staged copy before completion when that holds every
byte, as the staged copy is served as the blob afterwards only when someone hashed what it
holds; otherwise only ECR's own check can vouch for it.

An upload ECR ended while its session lives (no part for the upload's lifetime: a client that
sends less than a part at a time) is begun again from the staged copy when that holds every
byte (gateway/ecr/resend.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache

from gateway.ecr.calls import call
from gateway.ecr.errors import EcrError
from gateway.ecr.idle_trim import IdleTrim
from gateway.ecr.part_pipeline import MIN_PART, OutOfStep, PartPipeline, Pending, parts_of
from gateway.ecr.partbody import EncodedPart
from gateway.ecr.resend import MAX_RESUMES, resend_ranges
from gateway.ecr.retry import RetryPolicy
from gateway.ecr.routing import Target
from gateway.ecr.staging import SpoolsFull, StagingStore, repository_key
from gateway.ecr.unfinished import Grant, StillOpen, UnfinishedBytes
from gateway.observability.logs import Sparing, unsaid
from gateway.observability.metrics import UPLOAD_REFUSALS
from gateway.oci import errors as oci
from gateway.oci.backend import UploadStatus
from gateway.oci.digests import EMPTY_SHA256, sha256_digest
from gateway.oci.errors import OciError, RequestRefused, disk_full, is_disk_full
from gateway.oci.ranges import upload_range_header
from gateway.state.sessions import (
    SESSION_ID,
    SessionLimit,
    SessionStore,
    TailBudget,
    TailsFull,
    UploadSession,
    owner_of,
)
from gateway.state.unfinished_shares import UnfinishedShares

log = logging.getLogger(__name__)

MAX_PART = 20 * 1024 * 1024  # UploadLayerPart's layerPartBlob limit
# Parts cut from request bodies (being encoded, or on their way upstream) that the process
# holds at once over all uploads; each upload also fills at most one part. This bounds
# memory under many concurrent uploads: about (uploads + PARTS_IN_MEMORY) x part size.
PARTS_IN_MEMORY = 8
# Uploads the process remembers sending from their first byte; one it forgot is hashed from
# its staged copy before completion, like one that came from another process.
SENT_FROM_START = 10_000
# How long at most an AWS identity's proven right to push to a repository lets it use uploads
# other identities opened there without asking ECR again (no longer than the other answers
# kept for one identity, cache.manifest_revalidate_seconds), and how many proofs are kept.
PUSH_PROOF_SECONDS = 60.0
PUSH_PROOFS_KEPT = 10_000
# The store's bound on tails, once reached, is reached by every PATCH until sessions end:
# said once a minute (the metric counts every refusal).
_TAILS_FULL = Sparing()

class _Request:
    """A :class:`~gateway.ecr.part_pipeline.Destination` for one request on one session."""

    def __init__(self, manager: UploadManager, target: Target, session: UploadSession,
                 staged: bool, grant: Grant) -> None:
        self._manager = manager
        self._target = target
        self._session = session
        self._grant = grant  # what the request's client may still have ECR hold
        self._staged = staged  # the staging spool holds every byte already
        self._acknowledged = session.received  # what the client was told before this request
        self._refused = False  # a write failed where acknowledged bytes live: no more writes

    def admit(self, size: int) -> None:
        self._grant.reserve(size)

    async def send(self, part: EncodedPart) -> None:
        await self._manager._send_part(self._target, self._session, part,
                                       sender=self._grant.owner, grant=self._grant)

    async def record_progress(self, committed: int) -> None:
        await self._manager._record_progress(self._session, committed)

    async def spool(self, offset: int, data: list[memoryview]) -> None:
        if self._staged or self._refused:
            return
        try:
            await self._manager._spool(self._session, offset, data, self._acknowledged)
        except RequestRefused:
            self._refused = True
            raise

    async def save(self, tail: bytes) -> None:
        self._session.updated_at = time.time()
        await self._manager._save(self._session, tail, self._acknowledged)

    def sent_from_start(self, position: int) -> None:
        self._manager._sent_from_start(self._session.id, position)


def _too_many_open(limit: int) -> OciError:
    return OciError(oci.TOOMANYREQUESTS, {"limit": limit},
                    message="too many open upload sessions for this client: finish or cancel "
                            "(DELETE) some first",
                    headers={"Retry-After": "1"})


@dataclass(frozen=True)
class ClientBounds:
    """What one client's unfinished uploads may hold (0: no bound)."""

    open_sessions: int = 0  # limits.max_open_uploads_per_client
    tail_bytes: int = 0  # limits.max_upload_tail_bytes_per_client
    # limits.max_abandoned_upload_bytes_per_client, shared by every backend's uploads
    unfinished: UnfinishedBytes | None = None
    # With Redis: the other replicas' counts of the same clients, added to this one's.
    shares: UnfinishedShares | None = None


UNBOUNDED = ClientBounds()


class UploadManager:
    def __init__(self, store: SessionStore, staging: StagingStore, policy: RetryPolicy,
                 client_for: Callable[[Target], Any], *,
                 bounds: ClientBounds = UNBOUNDED,
                 push_proof_seconds: float = PUSH_PROOF_SECONDS) -> None:
        self._store = store
        self._still_open = still_open(store)
        self._max_open_per_client = bounds.open_sessions
        self._max_tail_per_client = bounds.tail_bytes
        self._unfinished = bounds.unfinished or UnfinishedBytes(0, 0.0)
        self._shares = bounds.shares
        self._staging = staging
        self._policy = policy
        self._client_for = client_for
        self._parts = asyncio.Semaphore(PARTS_IN_MEMORY)
        self._idle = IdleTrim()  # the heap's freed memory goes back once uploads stop
        # upload id -> the offset up to which this process sent every part itself.
        self._from_start: OrderedDict[str, int] = OrderedDict()
        # Target.key (the repository as one identity sees it) -> ECR let it push there.
        self._pushers: TTLCache[tuple[str | None, str, str], bool] = TTLCache(
            maxsize=PUSH_PROOFS_KEPT, ttl=max(push_proof_seconds, 0.001))

    def _all_sent_here(self, upload_id: str, position: int) -> bool:
        """Whether this process sent every part of an upload's first ``position`` bytes."""
        if position == 0:
            return True
        if self._from_start.get(upload_id) != position:
            return False
        self._from_start.move_to_end(upload_id)
        return True

    def _sent_from_start(self, upload_id: str, position: int) -> None:
        self._from_start[upload_id] = position
        self._from_start.move_to_end(upload_id)
        while len(self._from_start) > SENT_FROM_START:
            self._from_start.popitem(last=False)

    async def _call(self, target: Target, action: str, **params: Any) -> dict[str, Any]:
        client = await self._client_for(target)
        return await call(client, action, self._policy, **target.ids(), **params)

    async def start(self, name: str, target: Target, client: str | None = None
                    ) -> UploadSession:
        """Open a session for ``client`` (``RequestContext.client``; None: the gateway's own
        work, counted for nobody). A client holding ``max_open_per_client`` sessions gets
        429: asked before ECR is (a client at its limit costs no upstream call), and again
        as the session is stored (concurrent POSTs, other replicas)."""
        owner = owner_of(client) if client else None
        await self._within_bound(owner)
        limit = self._max_open_per_client if owner else 0
        if limit and owner and await self._store.owned(owner) >= limit:
            raise _too_many_open(limit)
        answer = await self._call(target, "InitiateLayerUpload")
        part_size = min(max(int(answer.get("partSize") or 10 * 1024 * 1024), MIN_PART), MAX_PART)
        session = UploadSession(
            id=uuid.uuid4().hex, name=name, repository=target.repository,
            registry_id=target.registry_id, route=target.route.prefix,
            ecr_upload_id=answer["uploadId"], part_size=part_size, owner=owner)
        try:
            await self._store.create(session, max_owned=limit)
        except SessionLimit:
            # ECR's upload is left unused: it expires on its own, as a cancelled one does.
            raise _too_many_open(limit) from None
        return session

    async def _session(self, name: str, upload_id: str, *, client: str | None = None,
                       finished: bool = False, target: Target | None = None
                       ) -> UploadSession:
        """The upload's session. One whose layer is complete is unknown (as once its session
        is gone) but to a closing PUT (``finished``), which closes it. So is one a logged-in
        ``client`` did not open, though its repository is the same: an upload id shows in
        logs, and who may push to a repository may still not take over another's upload (an
        address is not compared: a client's may change in the middle of an upload).

        An AWS identity (``key:``, auth.mode aws) other than the one that opened the upload
        (temporary keys renewed mid-upload have another key id) is served the session only
        once ECR, asked with its own keys (``target``), lets it push to the repository:
        the status, a tail kept here and the cancellation involve no ECR call of their own,
        so IAM would otherwise never be asked."""
        session = await self._store.get(upload_id)
        if session is None or session.name != name or (session.completed and not finished):
            raise OciError(oci.BLOB_UPLOAD_UNKNOWN, {"upload": upload_id})
        if client is None or session.owner == owner_of(client):
            return session
        if client.startswith("user:") and session.owner is not None:
            raise OciError(oci.BLOB_UPLOAD_UNKNOWN, {"upload": upload_id})
        if client.startswith("key:"):
            await self._prove_push(target, upload_id)
        return session

    async def _prove_push(self, target: Target | None, upload_id: str) -> None:
        """Ask ECR whether the identity ``target`` signs with may push to its repository,
        with the cheapest call that needs that (an ECR upload never written to expires on
        its own); an allowed identity is not asked again for ``push_proof_seconds``.
        Refused: the upload is unknown to it, as to a client of another repository."""
        if target is None:  # nothing to sign with: nothing proven
            raise OciError(oci.BLOB_UPLOAD_UNKNOWN, {"upload": upload_id})
        if target.key in self._pushers:
            return
        try:
            await self._call(target, "InitiateLayerUpload")
        except EcrError as exc:
            if exc.code != "AccessDeniedException":
                raise
            raise OciError(oci.BLOB_UPLOAD_UNKNOWN, {"upload": upload_id}) from None
        self._pushers[target.key] = True

    async def status(self, name: str, upload_id: str, client: str | None = None,
                     target: Target | None = None) -> UploadStatus:
        # Behind the session's lock: a client that lost its connection mid-PATCH learns the
        # offset once the gateway has finished with what that PATCH delivered.
        async with self._store.lock(upload_id):
            session = await self._session(name, upload_id, client=client, target=target)
            if session.tail_staged and not await asyncio.to_thread(
                    self._staging.holds, session.id, session.received):
                await self._tail(session)  # lost: the offset goes back to what ECR holds
        return UploadStatus(session.id, session.received)

    async def _send_part(self, target: Target, session: UploadSession,
                         part: bytes | EncodedPart, *, sender: str | None,
                         grant: Grant | None = None, final: bool = False) -> None:
        """Send one part as ``sender``'s (None: the gateway's own), out of ``grant``'s room
        if the request has one (the completion's last bytes: counted, never refused)."""
        first = session.committed
        last = first + len(part) - 1
        try:
            try:
                await self._call(target, "UploadLayerPart", uploadId=session.ecr_upload_id,
                                 partFirstByte=first, partLastByte=last, layerPartBlob=part)
            finally:
                if grant is not None:
                    grant.spent(len(part))
        except EcrError as exc:
            if exc.code == "UploadNotFoundException":
                # ECR ended the upload while this session holds it (no part for the upload's
                # lifetime): a new one takes every byte up to this part's end, if held here.
                await self._resume(target, session, last + 1, sender, exc)
                return
            # A retry of a part that did land (its answer was lost, or a process that died
            # had sent it) is refused as out of order; ECR's lastValidByteReceived tells how
            # much of it is in fact already stored.
            landed = exc.response.get("lastValidByteReceived")
            if exc.code != "InvalidLayerPartException" or not isinstance(landed, int) \
                    or landed < first:
                raise
            # ECR holds it up to ``landed``: counted as this request's (it continues it).
            self._unfinished.sent(session.id, sender, first, min(landed, last) + 1)
            if landed < last:
                # Stored up to the middle of this part (it was cut differently before).
                if not final:
                    raise OutOfStep(landed + 1) from exc
                data = part.data() if isinstance(part, EncodedPart) else part
                session.committed = landed + 1  # the last part may be of any size
                await self._send_part(target, session, data[landed + 1 - first:],
                                      sender=sender, final=True)
                return
            log.info("part %d-%d of upload %s was already stored", first, last, session.id)
        session.committed = last + 1
        self._unfinished.sent(session.id, sender, first, session.committed)

    async def _record_progress(self, session: UploadSession, committed: int) -> None:
        """Record that ECR holds the upload up to ``committed`` (while the next part goes):
        a process that dies mid-request then leaves its successor an offset at most two
        parts behind ECR's, which it realigns with. The bytes received but not yet sent live
        in this process only, so the record claims what ECR holds, no tail."""
        progress = UploadSession.from_dict(session.to_dict())
        progress.committed = progress.received = committed
        progress.tail_staged = False
        progress.updated_at = time.time()
        await self._store.save(progress, b"")

    async def _save(self, session: UploadSession, tail: bytes,
                    acknowledged: int | None = None) -> None:
        """Save the record and its tail. With a store only this process reads, a tail the
        staging spool holds stays there alone: its bytes are not written a second time.

        A tail that would take the client's tails in the store past
        ``max_upload_tail_bytes_per_client`` is cut back to what the client was told before
        this request (``acknowledged``; nothing of it when parts went past it): the rest is
        reported not received, and the client sends it again from the Range. Clients that
        open uploads and never finish them cannot fill the store (Redis's memory)."""
        try:
            await self._save_bounded(session, tail, self._max_tail_per_client)
        except TailBudget as full:
            log.warning("upload %s: the client's unfinished uploads keep %d bytes of tails "
                        "(limits.max_upload_tail_bytes_per_client)", session.id, full.args[0])
            await self._cut_back(session, tail, acknowledged)
        except TailsFull as full:
            UPLOAD_REFUSALS.labels("tail_total").inc()
            if (left_out := _TAILS_FULL.due("tails_full")) is not None:
                log.warning("unfinished uploads keep %d bytes of tails in the session store, "
                            "its bound (limits.max_upload_tail_bytes): PATCHes that would keep "
                            "more get 429%s", full.args[0], unsaid(left_out))
            await self._cut_back(session, tail, acknowledged, quiet=True)
            raise RequestRefused(oci.TOOMANYREQUESTS, {"upload": session.id},
                                 message="the registry holds too many unfinished uploads' "
                                         "bytes: send the chunk again later",
                                 headers={"Retry-After": "10"}) from None

    async def _cut_back(self, session: UploadSession, tail: bytes,
                        acknowledged: int | None, *, quiet: bool = False) -> None:
        """Keep of a tail that does not fit what the client was told before this request
        (``quiet``: a line per request would flood the log, the caller said it once)."""
        assert acknowledged is not None, "only a request's own save makes a tail grow"
        keep = max(acknowledged, session.committed)
        if not quiet:
            log.warning("upload %s stays at %d", session.id, keep)
        session.received = keep
        await asyncio.to_thread(self._staging.cut_back, session.id, keep)
        # What the client was told: kept, past either bound.
        await self._save_bounded(session, tail[:keep - session.committed], None)

    async def _save_bounded(self, session: UploadSession, tail: bytes,
                            bound: int | None) -> None:
        """``bound``: the owner's (0: none), and the store's own; None: neither."""
        session.tail_staged = bool(tail) and self._store.process_local and \
            await asyncio.to_thread(self._staging.holds, session.id, session.received)
        await self._store.save(session, b"" if session.tail_staged else tail,
                               max_owner_tail=bound or 0, bounded=bound is not None)

    async def _tail(self, session: UploadSession) -> bytes:
        """The session's tail, from the store or the staging spool. A staged tail that is
        gone (its spool dropped, or short after the machine went down) counts as not
        received: the record says so, and the client sends it again from the Range."""
        if not session.tail_staged:
            return await self._store.tail(session.id)
        tail = await asyncio.to_thread(self._staging.spool_range, session.id,
                                       session.committed, session.received)
        if tail is not None:
            return tail
        log.warning("upload %s lost its staged tail: it continues from %d", session.id,
                    session.committed)
        session.received = session.committed
        await self._save(session, b"")
        return b""

    async def write(self, name: str, upload_id: str, target: Target,
                    chunks: AsyncIterator[bytes], start: int | None, *,
                    staged: bool = False, client: str | None = None,
                    length: int | None = None) -> UploadStatus:
        """Cut ``chunks`` into parts for ECR. ``staged``: the staging spool holds every
        byte of the upload already (the caller put it there), so they are not written
        again; they are hashed and checked against the digest all the same. ``length``:
        the body's, when known before it is read (what it sends to ECR is then reserved
        against the client's bound first; a streamed body reserves part by part)."""
        with self._idle.busy():
            return await self._write(name, upload_id, target, chunks, start, staged, client,
                                     length)

    async def _write(self, name: str, upload_id: str, target: Target,
                     chunks: AsyncIterator[bytes], start: int | None,
                     staged: bool, client: str | None, length: int | None) -> UploadStatus:
        sender = owner_of(client) if client else None
        if length is None or length >= MIN_PART:
            # At its bound: refused without waiting for the lock (such a body has ECR hold
            # bytes, whatever the upload's tail). A shorter one is weighed with the tail,
            # under the lock: one that ECR will not hold (it stays tail, as a last short
            # chunk does) is taken at the bound, else a client whose open uploads hold
            # exactly its bound could finish none of them.
            await self._within_bound(sender)
        async with self._store.lock(upload_id):
            session = await self._session(name, upload_id, client=client, target=target)
            tail = await self._tail(session)
            if start is not None and start != session.received:
                raise OciError(oci.RANGE_INVALID, {"expected_start": session.received,
                                                   "got": start},
                               message="chunk does not start where the upload stands",
                               headers={"Range": upload_range_header(session.received),
                                        "Location": f"/v2/{name}/blobs/uploads/{upload_id}"})
            self._unfinished.touch(session.id)
            grant = self._unfinished.grant(sender)
            try:
                # Refused before a byte is read: a body of known length if what it sends
                # does not fit, another if the client reached its bound meanwhile.
                if length is None:
                    self._unfinished.check(sender, refusal=RequestRefused)
                else:
                    sends = parts_of(len(tail) + length, session.part_size)
                    if sends:
                        await self._recount(sender, sends)
                    grant.reserve(sends)
                pipeline = PartPipeline(
                    session, Pending(tail),
                    {**target.ids(), "uploadId": session.ecr_upload_id},
                    _Request(self, target, session, staged, grant), self._parts,
                    self._all_sent_here(session.id, session.committed))
                await pipeline.run(chunks)
            except RequestRefused as exc:
                # Nothing of the refused body stays staged either (the spool may hold parts
                # of it): the spool holds exactly what the upload stands at.
                await asyncio.to_thread(self._staging.cut_back, session.id, session.received)
                exc.headers.update({"Range": upload_range_header(session.received),
                                    "Location": f"/v2/{name}/blobs/uploads/{upload_id}"})
                raise
            finally:
                grant.close()
            return UploadStatus(session.id, session.received)

    async def _spool(self, session: UploadSession, offset: int,
                     data: memoryview | list[memoryview], acknowledged: int) -> None:
        """Stage received bytes (in a thread). A failed write (a full disk, say) mostly means
        no staged copy; but where the spool alone holds the tail the client was told is
        received (``tail_staged``: up to ``acknowledged``), it is cut back to that, never
        dropped, and the request is refused: the client sends the same chunk again."""
        try:
            await asyncio.to_thread(self._staging.append, session.id, offset, data)
        except SpoolsFull as full:
            log.warning("upload %s goes on unspooled: the spools of unfinished uploads take "
                        "%d bytes (blobs.staging.spools_max_bytes)", session.id, full.args[0])
            await self._unspool(session)
        except OSError as exc:
            if session.tail_staged:
                log.warning("staging upload %s failed (%s): the request is refused, the "
                            "upload stays at %d", session.id, exc.strerror or exc, acknowledged)
                await asyncio.to_thread(self._staging.cut_back, session.id, acknowledged)
                if is_disk_full(exc):
                    raise disk_full(exc) from None
                raise RequestRefused(oci.UNAVAILABLE, {"upload": session.id},
                                     message="the gateway could not stage the chunk",
                                     headers={"Retry-After": "1"}) from None
            log.warning("staging upload %s failed (%s): it will not be staged", session.id,
                        exc.strerror or exc)
            await asyncio.to_thread(self._staging.discard, session.id)

    async def _unspool(self, session: UploadSession) -> None:
        """Drop an upload's spool for good. A tail the client was told is received and that
        lives in the spool alone (as the stored record says) moves into the session store
        first, so that a process dying right after loses nothing acknowledged."""
        stored = await self._store.get(session.id)
        if stored is not None and stored.tail_staged:
            tail = await asyncio.to_thread(self._staging.spool_range, session.id,
                                           stored.committed, stored.received)
            if tail is not None:
                stored.tail_staged = False
                await self._store.save(stored, tail)
        session.tail_staged = False
        await asyncio.to_thread(self._staging.discard, session.id)

    async def finish(self, name: str, upload_id: str, target: Target,
                     digest: str, client: str | None = None, *,
                     findable: Callable[[int], Awaitable[None]] | None = None) -> int | None:
        """Complete the layer; returns its size once its bytes were checked against
        ``digest`` (None for the empty blob, which ECR never holds). ``findable(size)``
        makes the blob findable where it must be (the replicas' record of who holds it
        staged), under the session's lock, before the layer is completed: what it raises
        leaves the upload as it stood, for the client to finish again."""
        with self._idle.busy():
            return await self._finish(name, upload_id, target, digest, client, findable)

    async def _finish(self, name: str, upload_id: str, target: Target, digest: str,
                      client: str | None,
                      findable: Callable[[int], Awaitable[None]] | None) -> int | None:
        async with self._store.lock(upload_id):
            session = await self._session(name, upload_id, client=client, finished=True,
                                          target=target)
            if session.completed is not None:
                return await self._close_finished(session, digest, findable)
            # Anyone who learned the id may send a PUT that ends the upload unfinished.
            ender = await self._ender(session, client)
            if not digest.startswith("sha256:"):
                await self._abandon(session, charged=ender)
                raise OciError(oci.DIGEST_INVALID, {"digest": digest},
                               message="ECR stores sha256 digests only")
            if session.received == 0:
                await self._abandon(session, charged=ender)
                if digest != EMPTY_SHA256:
                    raise OciError(oci.DIGEST_INVALID, {"digest": digest},
                                   message="digest does not match the (empty) content")
                return None  # the empty blob is answered by the gateway itself
            received = session.received
            tail = await self._tail(session)
            if session.received != received:
                raise OciError(oci.BLOB_UPLOAD_INVALID, {"upload": upload_id},
                               message="the upload lost its last bytes; continue from Range",
                               headers={"Range": upload_range_header(session.received),
                                        "Location": f"/v2/{name}/blobs/uploads/{upload_id}"})
            # An upload that came (in part) from elsewhere is hashed from the staged copy
            # now, if that holds every byte: a mismatch is refused before anything more
            # goes upstream, a match lets the staged copy be served afterwards.
            stored = session.committed  # what ECR held before the tail
            sent_here = self._all_sent_here(session.id, stored)
            computed = None if sent_here else await self._checked_here(session, stored, tail,
                                                                        digest, ender)
            if findable is not None:
                await findable(session.received)
            upstream_checked = True
            try:
                # One part, unless the record comes from a version that kept longer tails.
                for start in range(0, len(tail), session.part_size):
                    await self._send_part(target, session,
                                          tail[start:start + session.part_size],
                                          sender=ender, final=True)
                if tail:
                    await self._save(session, b"")
                upstream_checked = await self._complete(target, session, digest, ender)
            except EcrError as exc:
                if exc.code == "LayerAlreadyExistsException":
                    upstream_checked = False  # ECR answers this before hashing anything
                else:
                    if exc.code == "InvalidLayerException":  # ECR hashed it: a mismatch
                        await self._refuse_digest(session, digest, None, ender)
                    if exc.code in ("UploadNotFoundException", "EmptyUploadException",
                                    "LayerPartTooSmallException"):
                        await self._abandon(session, charged=ender)
                    raise
            # ECR accepted the completion (or had): its bytes are a layer now.
            self._unfinished.completed(session.id)
            if computed is None and not upstream_checked and sent_here:
                # ECR vouches for nothing, and this process staged every byte it sent.
                computed = await self._checked_here(session, stored, tail, digest, ender)
            if computed is None and not upstream_checked:
                # Neither this process (the upload came from another one and left no staged
                # copy here) nor ECR checked these bytes: a 201 would vouch for content nobody
                # hashed. The repository does hold the digest, so a client that checks
                # with HEAD (as docker does before pushing again) finds it.
                await self._abandon(session, charged=ender)
                raise OciError(oci.BLOB_UPLOAD_INVALID, {"digest": digest, "upload": upload_id},
                               message="upload content could not be verified against the "
                                       "digest; the repository already holds that digest")
            # Recorded before the spool becomes the staged copy (the same file until the
            # spool is dropped): if the session outlives this request, no later PATCH
            # appends to it, and a PUT again closes the upload as finished. Its time is the
            # finish's: the sweep drops such a leftover soon after (``expire_idle``).
            session.completed = digest
            session.updated_at = time.time()
            await self._save(session, b"")
            if computed is not None or sent_here:
                # The spool itself was hashed, or ECR hashed the very chunks the spool was
                # written from (the tail is compared): it may be served as this digest.
                await asyncio.to_thread(self._staging.promote, session.id, digest,
                                        session.received, tail, _repository_key(session))
            await self._close(session)
            return session.received

    async def _complete(self, target: Target, session: UploadSession, digest: str,
                        sender: str | None) -> bool:
        """CompleteLayerUpload; False when an earlier attempt had completed the layer
        already (its answer lost, or a process that died before it could record it): that
        attempt may have been answered LayerAlreadyExists, so ECR vouches for nothing."""
        resumed = False
        while True:
            try:
                await self._call(target, "CompleteLayerUpload",
                                 uploadId=session.ecr_upload_id, layerDigests=[digest])
                return True
            except EcrError as exc:
                if exc.code != "UploadNotFoundException":
                    raise
                if await self._landed(target, digest, session.received):
                    log.info("upload %s was already complete as %s", session.id, digest)
                    return False
                if resumed:  # ended again at once: not begun again here
                    raise
                # ECR ended the upload (no part for its lifetime: a trickled upload's last
                # bytes were all tail). Begun again with every byte, if they are held here.
                await self._resume(target, session, session.received, sender, exc)
            resumed = True
            await self._save(session, b"")  # the new ECR upload's id, before completing it

    async def _resume(self, target: Target, session: UploadSession, end: int,
                      sender: str | None, ended: EcrError) -> None:
        """ECR ended the upload (``ended``: UploadNotFoundException) while the session holds
        it: begin a new one holding its first ``end`` bytes, sent again as ``sender``'s from
        the staging spool, a part at a time (gateway/ecr/resend.py). ``ended`` is raised
        instead where that cannot be done."""
        if session.resumed >= MAX_RESUMES or not await asyncio.to_thread(
                self._staging.holds, session.id, end):
            # The spool does not hold every byte (dropped, or the upload came in part through
            # another replica), or the upload was begun again often enough: nothing here
            # can make ECR hold it again, so the client is told it is unknown, as ECR said,
            # and starts over.
            log.warning("ECR ended upload %s at %d; it is not begun again (%d times so far)",
                        session.id, session.committed, session.resumed)
            raise ended
        # ECR holds nothing of the ended upload any more; what is sent again counts as any
        # part does: 429 (413) past the sender's bound, the session kept as it stood.
        self._unfinished.forget(session.id)
        grant = self._unfinished.grant(sender, end)
        session.resumed += 1
        try:
            answer = await self._call(target, "InitiateLayerUpload")
            upload_id = answer["uploadId"]
            for start, stop in resend_ranges(end, session.part_size):
                piece = await asyncio.to_thread(self._staging.spool_range, session.id,
                                                start, stop)
                if piece is None:  # the spool was dropped meanwhile
                    raise ended
                try:
                    await self._call(target, "UploadLayerPart", uploadId=upload_id,
                                     partFirstByte=start, partLastByte=stop - 1,
                                     layerPartBlob=piece)
                finally:
                    grant.spent(len(piece))
                del piece
                self._unfinished.sent(session.id, sender, start, stop)
        except BaseException:
            # The new upload is left to expire: what it holds counts as ended.
            self._unfinished.ended(session.id, 0, charged=None, owner=session.owner)
            raise
        finally:
            grant.close()
        log.warning("ECR ended upload %s at %d: begun again as a new ECR upload holding "
                    "%d bytes", session.id, session.committed, end)
        session.ecr_upload_id = upload_id
        session.committed = end
        self._sent_from_start(session.id, end)  # ECR holds what the spool holds, as sent

    async def _close_finished(self, session: UploadSession, digest: str,
                              findable: Callable[[int], Awaitable[None]] | None) -> int:
        """A PUT again on an upload whose layer a request completed (its bytes checked) and
        recorded, but could not answer or close. Closed as finished; the spool is staged
        again if it still hashes to the digest (the request may have died before that)."""
        if digest != session.completed:
            raise OciError(oci.BLOB_UPLOAD_UNKNOWN, {"upload": session.id})
        if await self._spool_digest(session) == digest:
            await asyncio.to_thread(self._staging.promote, session.id, digest,
                                    session.received, b"", _repository_key(session))
        if findable is not None:
            await findable(session.received)
        await self._close(session)
        return session.received

    async def _close(self, session: UploadSession) -> None:
        self._unfinished.completed(session.id)
        self._from_start.pop(session.id, None)
        await self._store.delete(session.id)
        # Only now: a process that dies before the session is gone must still be able to
        # hash the spool when the client sends its PUT again.
        await asyncio.to_thread(self._staging.discard, session.id)

    async def _checked_here(self, session: UploadSession, stored: int, tail: bytes,
                            digest: str, ender: str | None) -> str | None:
        """The digest of every byte the upload received, when this process can tell (the
        tail alone when ECR held none of it before, ``stored``; else the staged copy if that
        holds every byte); a mismatch with ``digest`` is refused, the upload ended by
        ``ender``."""
        computed: str | None
        if stored == 0 and len(tail) == session.received:
            computed = await asyncio.to_thread(sha256_digest, tail)
        else:
            computed = await self._spool_digest(session)
        if computed is not None and computed != digest:
            await self._refuse_digest(session, digest, computed, ender)
        return computed

    async def _spool_digest(self, session: UploadSession) -> str | None:
        """The digest of the staged copy, if it holds every byte the upload received."""
        log.info("upload %s: hashing its staged copy", session.id)
        return await asyncio.to_thread(self._staging.spool_digest, session.id,
                                       session.received)

    async def _refuse_digest(self, session: UploadSession, digest: str,
                             computed: str | None, ender: str | None) -> None:
        """The bytes are not ``digest``: the session ends (charged to ``ender``), ECR's
        upload is left to expire unfinished (or was refused by ECR's own check), and the
        client is told."""
        await self._abandon(session, charged=ender)
        raise OciError(oci.DIGEST_INVALID, {"digest": digest, "computed": computed}
                       if computed else {"digest": digest},
                       message="provided digest did not match uploaded content")

    async def _landed(self, target: Target, digest: str, size: int) -> bool:
        """Whether the repository holds ``digest`` with ``size`` bytes."""
        answer = await self._call(target, "BatchCheckLayerAvailability", layerDigests=[digest])
        return any(layer.get("layerAvailability") == "AVAILABLE"
                   and layer.get("layerSize") == size for layer in answer.get("layers", []))

    async def _abandon(self, session: UploadSession, *, charged: str | None = None) -> None:
        """End an upload unfinished: what ECR holds of it stays there until ECR ends the
        upload, and counts against ``charged`` (None: each sender's bytes against the
        sender, the rest against its owner; see gateway/ecr/unfinished.py)."""
        if session.completed:
            self._unfinished.completed(session.id)
        else:
            self._unfinished.ended(session.id, session.committed, charged=charged,
                                   owner=session.owner)
        self._from_start.pop(session.id, None)
        await asyncio.to_thread(self._staging.discard, session.id)
        await self._store.delete(session.id)

    async def expire_idle(self, idle_seconds: float,
                          finished_seconds: float | None = None) -> int:
        """Drop sessions no request has touched for ``idle_seconds``, and those whose layer
        was completed ``finished_seconds`` ago (a leftover of a closing PUT that could not
        delete it, kept only for a PUT again: its spool and record should not wait an
        hour); returns how many."""
        dropped = 0
        now = time.time()
        cutoff = now - idle_seconds
        finished_cutoff = cutoff if finished_seconds is None else max(
            cutoff, now - finished_seconds)
        for session in await self._store.idle(cutoff, finished_cutoff):
            try:
                async with self._store.lock(session.id):
                    # Under the lock, look again: with a shared store another replica may
                    # have used (or dropped) the session since the list was read.
                    current = await self._store.get(session.id)
                    if current is None or current.updated_at >= (
                            finished_cutoff if current.completed else cutoff):
                        continue
                    await self._abandon(current)
                    dropped += 1
            except OciError:  # busy: a request is writing it right now, so it is not idle
                continue
        if dropped:
            log.info("dropped %d idle upload sessions", dropped)
        # Uploads counted as open here that no request used for as long: gone from the
        # store (or completed), they ended elsewhere (another replica, a store that lost them).
        await self._unfinished.recount(
            self._unfinished.unused_since(self._unfinished.now() - idle_seconds),
            self._still_open)
        return dropped

    async def drop_orphan_spools(self, idle_seconds: float | None = None) -> int:
        """Drop spools no session names, and links :meth:`StagingStore.promote` left
        half-made; returns how many. ``idle_seconds`` None: once at the start, where any
        such file was left by an earlier process (every ``.kept`` link: the next promote
        would make its own). Else (on every sweep of a running
        gateway) only those not written for ``idle_seconds`` as well: with a shared store,
        an upload cancelled or expired through another replica, or sessions lost with the
        store, leave this replica's spools behind.

        Why this never drops a file in use: a session is saved before its first byte is
        spooled and deleted (under its lock) only after the last write to its spool, and a
        session id is never made again; so a request that writes a spool found its
        session first, and the file is named by a session until the write is over. A
        request that read its session just before the session vanished (the store lost it)
        may still be writing; its writes keep the spool's mtime fresh, so the age rule
        leaves it alone (the next sweep after it idled drops it). A ``.kept`` link exists
        only inside :meth:`StagingStore.promote`, which runs under the session's lock
        before the session is deleted: its session still names it. Only a store that
        cannot answer stops the sweep (an error, never taken for "no session")."""
        cutoff = None if idle_seconds is None else time.time() - idle_seconds
        dropped = 0
        for name, written in await asyncio.to_thread(self._staging.spool_entries):
            upload_id = name.removesuffix(".kept")
            if not SESSION_ID.fullmatch(upload_id):
                continue  # not a file this gateway makes
            if cutoff is None and name != upload_id:  # at the start nothing is promoting
                await asyncio.to_thread(self._staging.drop_entry, name)
                dropped += 1
                continue
            if cutoff is not None and written >= cutoff:
                continue
            if await self._store.get(upload_id) is None:
                await asyncio.to_thread(self._staging.drop_entry, name)
                dropped += 1
        if dropped:
            log.info("dropped %d spools no upload session names", dropped)
        return dropped

    async def cancel(self, name: str, upload_id: str, client: str | None = None,
                     target: Target | None = None) -> None:
        async with self._store.lock(upload_id):
            session = await self._session(name, upload_id, client=client, target=target)
            # ECR has no action to abort an upload; its upload simply expires unused.
            await self._abandon(session, charged=await self._ender(session, client))

    async def _ender(self, session: UploadSession, client: str | None) -> str | None:
        """Whom the bytes of an upload that ``client``'s request ends unfinished count
        against: that client. Another client that may end it (an anonymous one knowing the
        id) must not spend the owner's bound and lock the owner out; nor, once past its own
        bound, end others' uploads at will: a second address would then cancel every upload
        of the first, which no bound would ever count (429: the upload expires on its own,
        counted against its owner)."""
        ender = owner_of(client) if client else None
        if ender is not None and ender != session.owner:
            await self._within_bound(ender)
        return ender

    async def _within_bound(self, owner: str | None) -> None:
        """429 if ``owner`` is at its unfinished-bytes bound, once uploads ended through
        another replica no longer count."""
        await self._recount(owner)
        self._unfinished.check(owner)

    async def _recount(self, owner: str | None, more: int = 0) -> None:
        """Before ``owner`` is refused for what its open uploads hold: those whose sessions
        are gone from the store, or completed, were ended through another replica (the one a
        client's PUT reached gave their bytes back there), and no longer count here. With
        Redis, what the other replicas count for ``owner`` is read first."""
        if self._shares is not None:
            await self._shares.refresh(owner)
        await self._unfinished.recount(self._unfinished.doubtful(owner, more),
                                       self._still_open)


def still_open(store: SessionStore) -> StillOpen:
    """Whether ``store`` holds an upload open: neither gone nor completed."""
    async def held_open(upload_id: str) -> bool:
        session = await store.get(upload_id)
        return session is not None and session.completed is None
    return held_open


def _repository_key(session: UploadSession) -> str:
    return repository_key(session.registry_id, session.repository)
