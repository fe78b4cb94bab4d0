"""One request body's way into an upload's ECR parts, as a small state machine.

Each change of state is one method: bytes buffered (:meth:`PartPipeline.buffered`), a part
cut (:meth:`~PartPipeline.cut`), a part sent (:meth:`~PartPipeline.send`), its
acknowledgement recorded (:meth:`~PartPipeline.acked`), a failure (:meth:`~PartPipeline.failed`),
a cancellation (:meth:`~PartPipeline.cancel`), the realignment to what ECR says it holds
(:meth:`~PartPipeline.realign`) and the end of the request (:meth:`~PartPipeline.wind_up`),
which always leaves the session record consistent. :meth:`~PartPipeline.run` drives them.

While a part is on its way upstream, the next one fills, and its bytes are staged and its
request body hashed in worker threads as they arrive (two works, each in stream order, the
one not waiting for the other), so that when it is cut (as the chunks it arrived in: nothing
is copied) only its last bytes are left to prepare, and it leaves as soon as ECR has taken
the previous one. The layer's own digest is not computed here: ECR checks it when the layer
is completed (see gateway/ecr/uploads.py for when it does not).
Reading the request pauses while both are pending, and while the process holds its limit of
cut parts over all uploads.

The progress record of an acknowledged part is saved while the next part goes, not before:
the store may then lag ECR by up to two parts (a successor realigns with ECR, see
:class:`OutOfStep`), and the request's own record always waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import aiohttp

from gateway.disk.direct_io import ALIGN
from gateway.ecr.partbody import BodyHash, EncodedPart, opening
from gateway.oci import errors as oci
from gateway.oci.errors import OciError, RequestRefused
from gateway.oci.ranges import upload_range_header
from gateway.state.sessions import UploadSession

log = logging.getLogger(__name__)

MIN_PART = 5 * 1024 * 1024  # every part but the last (LayerPartTooSmallException)
# The filling part is handed to the worker threads in this many steps: each step is a thread
# hop for its hash and one for its staging write (a round of work for the event loop and the
# kernel), and the last one is handed as the part is cut. 10 MiB parts in two steps of 5 MiB
# cost the gateway 0.1 CPU-s per GiB less than in steps of 2 MiB (bench/README.md), which
# cost less than steps of 1 MiB.
STEPS_PER_PART = 2


def step_of(part_size: int) -> int:
    """Bytes of a filling part handed at a time, whole blocks (O_DIRECT staging writes)."""
    step = part_size // STEPS_PER_PART
    return max(ALIGN, step - step % ALIGN)

# A client that goes away mid-body surfaces as one of these while the body is read.
CLIENT_GONE = (aiohttp.ClientError, ConnectionError, asyncio.IncompleteReadError)

Buffer = bytes | bytearray | memoryview


class OutOfStep(Exception):
    """ECR already holds this upload up to ``upstream_next`` (mid-part)."""

    def __init__(self, upstream_next: int) -> None:
        super().__init__(f"ECR holds the upload up to byte {upstream_next}")
        self.upstream_next = upstream_next


class Pending:
    """Received bytes not sent upstream yet, kept as the chunks they arrived in, so that a
    part is joined from them with a single copy."""

    def __init__(self, data: bytes = b"") -> None:
        self._chunks: list[bytes | memoryview] = [data] if data else []
        self.size = len(data)

    def add(self, chunk: bytes) -> None:
        if chunk:
            self._chunks.append(chunk)
            self.size += len(chunk)

    def put_back(self, data: bytes) -> None:
        if data:
            self._chunks.insert(0, data)
            self.size += len(data)

    def take(self, count: int) -> bytes:
        """The first ``count`` bytes as one bytes object; the rest stays pending."""
        taken = self.take_chunks(count)
        if len(taken) == 1 and isinstance(taken[0], bytes):
            return taken[0]
        return b"".join(taken)

    def peek(self, start: int, count: int) -> list[memoryview]:
        """Views of ``count`` pending bytes from ``start`` (nothing taken or copied)."""
        views: list[memoryview] = []
        for chunk in self._chunks:
            if count == 0:
                break
            if start >= len(chunk):
                start -= len(chunk)
                continue
            view = memoryview(chunk)[start:start + count]
            views.append(view)
            count -= len(view)
            start = 0
        return views

    def take_chunks(self, count: int) -> list[bytes | memoryview]:
        """The first ``count`` bytes as the chunks they are in (the last one cut to fit)."""
        taken: list[bytes | memoryview] = []
        need, used = count, 0
        while need:
            chunk = self._chunks[used]
            if len(chunk) <= need:
                taken.append(chunk)
                need -= len(chunk)
                used += 1
            else:
                view = memoryview(chunk)
                taken.append(view[:need])
                self._chunks[used] = view[need:]
                need = 0
        del self._chunks[:used]
        self.size -= count
        return taken


def skip(chunks: Sequence[Buffer], count: int) -> list[memoryview]:
    """The chunks' bytes from offset ``count`` on, as views (nothing copied)."""
    views = []
    for chunk in chunks:
        view = memoryview(chunk)
        if count >= len(view):
            count -= len(view)
            continue
        views.append(view[count:])
        count = 0
    return views


def parts_of(total: int, size: int) -> int:
    """The bytes of ``total`` (an upload's tail and a request body) that a request sends as
    parts of ``size``: all but what is left under the part minimum after the whole parts."""
    rest = total % size
    return total - rest if rest < MIN_PART else total


class Destination(Protocol):
    """Where a pipeline's parts and records go: ECR, the staging spool, the session store
    and the process's account of what it sent (``UploadManager`` for one request)."""

    def admit(self, size: int) -> None:
        """Before a part of ``size`` bytes goes: raises :class:`RequestRefused` when the
        client may not have ECR hold it (the part is tail again, nothing more is read)."""

    async def send(self, part: EncodedPart) -> None:
        """UploadLayerPart; raises :class:`OutOfStep` when ECR holds part of it already."""

    async def record_progress(self, committed: int) -> None:
        """Save the session as ECR holds it up to ``committed`` (no tail). Called once at a
        time, in order, while the next part goes."""

    async def spool(self, offset: int, data: list[memoryview]) -> None:
        """Stage received bytes at ``offset``. A failed write raises :class:`RequestRefused`
        only when the spool holds acknowledged bytes nothing else does (it is then cut back
        to them); otherwise it only means no staged copy."""

    async def save(self, tail: bytes) -> None:
        """Save the session with ``tail``, the bytes received but not stored upstream."""

    def sent_from_start(self, position: int) -> None:
        """This process sent every part of the upload up to ``position`` itself."""


class _Cut:
    """A part taken from the pending bytes: its first byte, the task preparing it (its body
    hashed, its bytes staged) and the place it holds among the process's cut parts until
    it is freed."""

    def __init__(self, part: EncodedPart, first: int, places: asyncio.Semaphore) -> None:
        self.part = part
        self.first = first
        self.prepared: asyncio.Task[None] | None = None
        self._places: asyncio.Semaphore | None = places

    @property
    def end(self) -> int:
        return self.first + self.part.size

    def free(self) -> None:
        """Give the place back (once)."""
        places, self._places = self._places, None
        if places is not None:
            places.release()


class _Filling:
    """The part being filled, from byte ``first``: its request body (for ``members``)
    hashed as its bytes arrive."""

    def __init__(self, first: int, members: dict[str, Any]) -> None:
        self.first = first
        self.members = members
        self.handed = 0  # bytes of the part handed to the worker threads so far
        self.body = BodyHash(opening(members))


class PartPipeline:
    """One request's bytes on their way into ECR parts of ``session.part_size``.

    ``places`` bounds the cut parts of every upload in the process; ``from_start`` says
    whether this process sent every part up to ``session.committed`` itself.
    """

    def __init__(self, session: UploadSession, pending: Pending, members: dict[str, Any],
                 destination: Destination, places: asyncio.Semaphore,
                 from_start: bool) -> None:
        self.session = session
        self.pending = pending
        self.size = session.part_size
        self._step = step_of(self.size)
        self._members_base = members  # the UploadLayerPart members besides the byte range
        self._to = destination
        self._places = places
        self.staged = session.received  # the spool holds everything received before
        self.received_before = session.received  # what the client was told it holds
        self.next_first = session.committed
        self.cut_parts: list[_Cut] = []  # parts taken from ``pending`` ECR has not stored
        self.from_start = from_start
        # The last step of each work on the bytes (the request body's hash, the staging
        # writes): each in stream order, neither waiting for the other.
        self._body_step: asyncio.Task[None] | None = None
        self._spool_step: asyncio.Task[None] | None = None
        self._filling: _Filling | None = None  # from the first cut on
        self._unprepared: BaseException | None = None  # a step failed (a refused write)
        self._in_flight: asyncio.Task[None] | None = None
        self._recording: asyncio.Task[None] | None = None  # the last progress record
        self.failure: BaseException | None = None
        self.cancelled = False

    # -- state changes ------------------------------------------------------------------

    def buffered(self, chunk: bytes) -> None:
        """Bytes received: pending until a part is cut from them, and handed to the worker
        threads a step at a time once a part was cut (the first part of a request is
        prepared from its cut: a request that ends before a part is full, as a chunked
        client's do, would have its tail hashed again by the next one)."""
        self.pending.add(chunk)
        self.session.received += len(chunk)
        filling = self._filling
        if filling is not None:
            ready = min(self.pending.size, self.size) - filling.handed
            ready -= ready % ALIGN  # each step's staging write starts on a block (O_DIRECT)
            if ready >= self._step:
                self._hand(filling, ready)

    def _members(self, first: int, count: int) -> dict[str, Any]:
        # The session's upload id, not the request's first: ECR may have ended the upload
        # and a new one taken its place (gateway/ecr/resend.py).
        return {**self._members_base, "uploadId": self.session.ecr_upload_id,
                "partFirstByte": first, "partLastByte": first + count - 1}

    def _hand(self, filling: _Filling, count: int) -> None:
        """Start the work on the filling part's next ``count`` pending bytes."""
        if count == 0:
            return  # every byte was handed already
        views = self.pending.peek(filling.handed, count)
        offset = filling.first + filling.handed
        filling.handed += count
        new_from = max(0, self.staged - offset)
        self._body_step = self._in_order(
            self._body_step, lambda: asyncio.to_thread(filling.body.update, views))
        if new_from < count:
            self._spool_step = self._in_order(
                self._spool_step,
                lambda: self._to.spool(offset + new_from, skip(views, new_from)))
        self.staged = max(self.staged, offset + count)

    @property
    def full(self) -> bool:
        """Whether a whole part is pending."""
        return self.pending.size >= self.size

    async def cut(self, count: int) -> _Cut:
        """Take the next ``count`` pending bytes as a part (waiting for a place) and start
        preparing it: staging its new bytes and hashing its body, in stream order."""
        await self._places.acquire()
        first = self.next_first
        filling = self._filling or _Filling(first, self._members(first, self.size))
        self._hand(filling, count - filling.handed)
        part = EncodedPart(self.pending.take_chunks(count), self._members(first, count))
        cut = _Cut(part, first, self._places)
        self.cut_parts.append(cut)
        cut.prepared = asyncio.create_task(
            self._prepared(cut, filling, [self._body_step, self._spool_step]))
        self.next_first += count
        self._filling = _Filling(self.next_first, self._members(self.next_first, self.size))
        return cut

    async def send(self, cut: _Cut) -> None:
        """Send a prepared part and record ECR's acknowledgement. The place is given back
        sent or not: an upload whose send failed must never hold places while it waits."""
        try:
            assert cut.prepared is not None
            # Waited for, never cancelled from here: wind_up must find every write done.
            await asyncio.wait([cut.prepared])
            cut.prepared.result()
            await self._to.send(cut.part)
            self.acked(cut)
        finally:
            cut.free()
        # Saved while the next part goes; that one waits here for the record before: the
        # store is never more than two parts behind ECR.
        before = self._recording
        self._recording = asyncio.create_task(self._record(self.session.committed, before))
        if before is not None:
            await asyncio.wait([before])  # never cancelled from here: the record is saved
            if (error := before.exception()) is not None:
                raise error

    async def _record(self, committed: int, before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await asyncio.wait([before])  # records are saved in order
        await self._to.record_progress(committed)

    def acked(self, cut: _Cut) -> None:
        """ECR stored ``cut``: the upload's committed offset moves past it."""
        self.cut_parts.remove(cut)
        self.session.committed = cut.end
        if self.from_start:
            self._to.sent_from_start(cut.end)

    def failed(self, exc: BaseException) -> None:
        """The request fails; the first failure is the one reported."""
        if self.failure is None:
            self.failure = exc

    def cancel(self) -> None:
        """The request was cancelled: the part in flight is abandoned (it is tail again)
        and no more parts go; the session is still saved by :meth:`wind_up`."""
        self.cancelled = True
        if self._in_flight is not None:
            self._in_flight.cancel()

    def realign(self, upstream_next: int, rest: bytes) -> bytes:
        """ECR holds more than this session recorded: skip what it has, and let the client
        continue from the Range (its next request is cut to match). Returns the tail left."""
        rest = rest[upstream_next - self.session.committed:]
        self.session.committed = upstream_next
        self.session.received = max(self.session.received, upstream_next)
        log.info("upload %s realigned with ECR at %d", self.session.id, upstream_next)
        return rest

    # -- driving ------------------------------------------------------------------------

    async def run(self, chunks: AsyncIterator[bytes]) -> None:
        """Move a request body into parts; always leave the store consistent."""
        try:
            await self._take(chunks)
            await self.settle()  # the part in flight settles before the rest goes
            await self._flush()
        except asyncio.CancelledError:
            self.cancel()
            raise
        finally:
            await self.wind_up()
        if self.failure is not None:
            raise self.failure

    async def _take(self, chunks: AsyncIterator[bytes]) -> None:
        """Read the body, sending each whole part while the next one fills."""
        try:
            async for chunk in chunks:
                self.buffered(chunk)
                while self.full:
                    cut = await self.cut(self.size)
                    await self.settle()
                    if self.failure is not None:
                        return  # the part before failed: this one is tail again
                    self._to.admit(cut.part.size)
                    self._in_flight = asyncio.create_task(self.send(cut))
                    # The task holds the part until ECR has it; a local would hold it on
                    # while the next part fills and waits for a place (10 MiB per upload).
                    del cut
        except CLIENT_GONE:
            log.info("client went away mid-body on upload %s at %d", self.session.id,
                     self.session.received)
        except Exception as exc:  # a body that broke its limits: still saved first
            self.failed(exc)

    async def settle(self) -> None:
        """Wait for the part in flight; its failure (or cancellation) becomes the
        request's. Never raises what the send raised, and never cancels the send."""
        task = self._in_flight
        if task is None:
            return
        await asyncio.wait([task])
        self._in_flight = None  # only now: a cancel() while waiting must still reach it
        if task.cancelled():
            self.failed(asyncio.CancelledError())
        elif (error := task.exception()) is not None:
            self.failed(error)

    async def _flush(self) -> None:
        """What is left goes up if it may be a part (in parts of at most ``size``: a tail
        carried over from an earlier request is cut again here)."""
        while self.failure is None and self.pending.size >= MIN_PART:
            cut = await self.cut(min(self.pending.size, self.size))
            try:
                self._to.admit(cut.part.size)
            except RequestRefused as exc:
                self.failed(exc)
                return
            self._in_flight = asyncio.create_task(self.send(cut))
            del cut
            await self.settle()

    async def wind_up(self) -> None:
        """Settle what is in flight, turn every part ECR has not stored into tail again,
        keep at most one part of it, stage and save it with the session record."""
        await self.settle()
        if self._recording is not None:
            await asyncio.wait([self._recording])  # the request's record comes last
            if (error := self._recording.exception()) is not None:
                self.failed(error)
        steps = [step for step in (self._body_step, self._spool_step) if step is not None]
        if steps:
            await asyncio.wait(steps)  # staging of every byte handed is done
        if self._unprepared is not None:
            self.failed(self._unprepared)
        for cut in reversed(self.cut_parts):
            self.pending.put_back(cut.part.data())  # not stored upstream: it is tail again
            cut.free()
        self.cut_parts.clear()
        session = self.session
        rest = self.pending.take(self.pending.size)
        if isinstance(self.failure, OutOfStep):
            rest = self.realign(self.failure.upstream_next, rest)
        if len(rest) > self.size:
            # Parts that did not reach ECR: the session keeps one part of them as its tail
            # (the next request, or the completion, must be able to send it), the rest counts
            # as not received and the client sends it again from the upload's Range.
            log.info("upload %s keeps %d of %d bytes not stored upstream", session.id,
                     self.size, len(rest))
            rest = rest[:self.size]
            session.received = session.committed + self.size
        if isinstance(self.failure, OutOfStep):
            self.failure = OciError(
                oci.UNAVAILABLE, {"upload": session.id},
                message="upload realigned with ECR; continue from Range",
                headers={"Retry-After": "0", "Range": upload_range_header(session.received)})
        if not isinstance(self.failure, RequestRefused):
            new_from = max(0, self.staged - session.committed)
            if new_from < len(rest):
                try:
                    await self._to.spool(session.committed + new_from,
                                         [memoryview(rest)[new_from:]])
                except RequestRefused as exc:
                    self.failure = exc  # nothing of this request may be recorded now
        if isinstance(self.failure, RequestRefused):
            # Refused as a whole (a body that is not its Content-Range, a full disk): the
            # upload stands where it stood, or where ECR now holds it if parts of this body
            # went up (a part starts with the old tail, so that is never short of it).
            # Nothing is saved: the store holds just that already (the record from before,
            # or the progress recorded with the part).
            session.received = max(self.received_before, session.committed)
            return
        await self._to.save(rest)

    def _in_order(self, previous: asyncio.Task[None] | None,
                  work: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """A task doing ``work`` once ``previous`` is done (each work's steps stay in stream
        order). A failure is kept for the part's send and the request (a later step must
        not hide it)."""

        async def step() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                await work()
            except Exception as exc:
                if self._unprepared is None:
                    self._unprepared = exc

        return asyncio.create_task(step())

    async def _prepared(self, cut: _Cut, filling: _Filling,
                        last: list[asyncio.Task[None] | None]) -> None:
        """The part is ready to go once its body is hashed (again, in a worker thread, when
        it is not a whole part) and its bytes are staged."""
        steps = [step for step in last if step is not None]
        if steps:
            await asyncio.wait(steps)
        if self._unprepared is not None:
            raise self._unprepared
        if cut.part.members == filling.members:
            cut.part.hashed_ahead(filling.body)
        else:
            await cut.part.prepare()
