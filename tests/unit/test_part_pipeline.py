"""PartPipeline's state changes, one at a time: bytes buffered, a part cut, sent and
acknowledged, a failure, a cancellation and the realignment to what ECR holds. The
destination here keeps what it is given in memory (ECR, the spool and the session store
are exercised over HTTP and on disk by tests/integration/test_uploads.py and its peers)."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncIterator, Sequence

import pytest

from gateway.ecr import part_pipeline, partbody
from gateway.ecr.part_pipeline import MIN_PART, OutOfStep, PartPipeline, Pending, parts_of, step_of
from gateway.ecr.partbody import EncodedPart
from gateway.oci.errors import SIZE_INVALID, TOOMANYREQUESTS, OciError, RequestRefused
from gateway.state.sessions import UploadSession

PART = MIN_PART


class Destination:
    """ECR, spool, store and the parts sent from the upload's start, as lists and a
    bytearray."""

    def __init__(self, refuse: BaseException | None = None, refuse_at: int = 0,
                 room: int | None = None) -> None:
        self.room = room  # the bytes the client may still have ECR hold (None: any)
        self.sent: list[tuple[int, bytes]] = []
        self.parts: list[weakref.ref[EncodedPart]] = []  # whether anything still holds them
        self.progress: list[int] = []
        self.spooled = bytearray()
        self.saved: list[tuple[int, int, bytes]] = []  # committed, received, tail
        self.from_start: list[int] = []
        self.spool_hold: asyncio.Event | None = None  # a staging write waits for it when set
        self.refuse, self.refuse_at = refuse, refuse_at
        self.hold: asyncio.Event | None = None  # a send waits for it when set
        self.record_hold: asyncio.Event | None = None  # a progress record waits for it
        self.events: list[tuple[str, int]] = []  # sends, records and saves, in order
        self.spool_offsets: list[int] = []
        self.sending = asyncio.Event()
        self.session: UploadSession | None = None

    def admit(self, size: int) -> None:
        if self.room is not None:
            if size > self.room:
                raise RequestRefused(TOOMANYREQUESTS, message="no room")
            self.room -= size

    async def send(self, part: EncodedPart) -> None:
        self.sending.set()
        first = part.members["partFirstByte"]
        if self.hold is not None:
            await self.hold.wait()
        if self.refuse is not None and first >= self.refuse_at:
            raise self.refuse
        body = await part.body_for(part.members)  # hashed ahead: the very document
        assert body.sha256 == partbody.build(part.members, part.data()).sha256
        self.sent.append((first, part.data()))
        self.events.append(("send", first))
        self.parts.append(weakref.ref(part))

    async def record_progress(self, committed: int | None = None) -> None:
        if committed is None:  # the signature before records left the critical path
            assert self.session is not None
            committed = self.session.committed
        if self.record_hold is not None:
            await self.record_hold.wait()
        self.progress.append(committed)
        self.events.append(("record", committed))

    async def spool(self, offset: int, data: list[memoryview]) -> None:
        if self.spool_hold is not None:
            await self.spool_hold.wait()
        assert offset == len(self.spooled), "staging writes stay in stream order"
        self.spool_offsets.append(offset)
        for piece in data:
            self.spooled += piece

    async def save(self, tail: bytes) -> None:
        assert self.session is not None
        assert len(tail) == self.session.tail_length, "the tail matches the record"
        self.saved.append((self.session.committed, self.session.received, tail))
        self.events.append(("save", self.session.committed))

    def sent_from_start(self, position: int) -> None:
        self.from_start.append(position)


def _pipeline(destination: Destination, *, places: int = 8, tail: bytes = b"",
              committed: int = 0, part_size: int = PART) -> PartPipeline:
    session = UploadSession(id="u1", name="repo", repository="repo", registry_id=None,
                            route="", ecr_upload_id="ecr-1", part_size=part_size,
                            received=committed + len(tail), committed=committed)
    destination.session = session
    return PartPipeline(session, Pending(tail), {"repositoryName": "repo", "uploadId": "ecr-1"},
                        destination, asyncio.Semaphore(places),
                        committed == 0)


async def _body(data: bytes, chunk: int = 1 << 20) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start:start + chunk]


def test_buffered_bytes_count_as_received_until_a_part_is_full() -> None:
    pipeline = _pipeline(Destination())
    pipeline.buffered(b"x" * (PART - 1))
    assert (pipeline.session.received, pipeline.pending.size, pipeline.full) == (
        PART - 1, PART - 1, False)
    pipeline.buffered(b"y")
    assert pipeline.full


async def test_a_cut_part_is_the_chunks_it_arrived_in_and_holds_a_place() -> None:
    destination = Destination()
    pipeline = _pipeline(destination, places=1)
    chunks = [os.urandom(PART // 2), os.urandom(PART // 2 + 10)]
    for chunk in chunks:
        pipeline.buffered(chunk)
    cut = await pipeline.cut(PART)
    assert cut.part.chunks[0] is chunks[0]  # nothing copied
    assert cut.part.members["partFirstByte"] == 0
    assert cut.part.members["partLastByte"] == PART - 1
    assert (pipeline.pending.size, pipeline.next_first) == (10, PART)
    assert pipeline._places.locked()
    assert cut.prepared is not None
    await cut.prepared
    assert bytes(destination.spooled) == b"".join(chunks)[:PART]  # staged as it is cut
    cut.free()
    cut.free()  # given back once
    assert not pipeline._places.locked()
    assert pipeline._places._value == 1


async def test_acked_parts_move_the_offset() -> None:
    destination = Destination()
    pipeline = _pipeline(destination, places=2)
    data = os.urandom(2 * PART + 123)
    await pipeline.run(_body(data))
    assert [first for first, _ in destination.sent] == [0, PART]
    assert b"".join(part for _, part in destination.sent) == data[:2 * PART]
    assert destination.progress == [PART, 2 * PART]  # every acknowledged part, in order
    assert destination.from_start == [PART, 2 * PART]
    assert destination.saved == [(2 * PART, len(data), data[2 * PART:])]
    assert bytes(destination.spooled) == data  # every byte staged once, in order
    assert pipeline._places._value == 2


async def test_a_streamed_body_stops_before_the_part_the_client_has_no_room_for() -> None:
    destination = Destination(room=2 * PART)
    pipeline = _pipeline(destination)
    read = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        async for chunk in _body(os.urandom(5 * PART)):
            read += len(chunk)
            yield chunk

    with pytest.raises(RequestRefused):
        await pipeline.run(body())
    assert [first for first, _ in destination.sent] == [0, PART]
    assert read <= 3 * PART  # no more of the body is read once a part is refused
    # The upload stands where ECR holds it; nothing of the rest is saved as tail.
    assert (pipeline.session.committed, pipeline.session.received) == (2 * PART, 2 * PART)
    assert destination.saved == []


def test_a_request_of_known_length_sends_all_but_a_tail_under_the_minimum() -> None:
    assert parts_of(2 * PART, PART) == 2 * PART
    assert parts_of(2 * PART + 1, PART) == 2 * PART
    assert parts_of(MIN_PART - 1, 2 * MIN_PART) == 0
    assert parts_of(3 * MIN_PART, 2 * MIN_PART) == 3 * MIN_PART


async def test_a_part_goes_while_the_record_before_is_saved() -> None:
    """The progress record is off the chain of parts: the next part goes while it is
    saved, one more waits for it (the store is at most two parts behind ECR), and the
    request's own record comes after every progress record."""
    destination = Destination()
    destination.record_hold = asyncio.Event()  # the store is slow
    pipeline = _pipeline(destination, places=4)
    data = os.urandom(3 * PART + 5)
    task = asyncio.create_task(pipeline.run(_body(data)))
    for _ in range(1000):
        if len(destination.sent) >= 2 or task.done():
            break
        await asyncio.sleep(0.01)
    assert [first for first, _ in destination.sent] == [0, PART]
    assert destination.progress == []  # the first record is still being saved
    await asyncio.sleep(0.1)
    assert len(destination.sent) == 2  # the third part waits for the first record
    destination.record_hold.set()
    await task
    assert destination.progress == [PART, 2 * PART, 3 * PART]
    assert destination.events[-1] == ("save", 3 * PART)
    assert destination.saved == [(3 * PART, len(data), data[3 * PART:])]


async def test_the_next_part_is_staged_and_hashed_as_it_arrives() -> None:
    """While a part is on its way, the bytes of the next one are staged and hashed as they
    come, before that part is full; what ECR receives is the same."""
    destination = Destination()
    destination.hold = asyncio.Event()  # ECR takes its time with the first part
    pipeline = _pipeline(destination, places=4)
    data = os.urandom(3 * PART + 5)
    arrived, more = asyncio.Event(), asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, PART + 3 * 1024 * 1024, 333_333):  # unaligned to base64
            yield data[start:min(start + 333_333, PART + 3 * 1024 * 1024)]
        arrived.set()
        await more.wait()  # the client pauses mid-part
        async for chunk in _body(data[PART + 3 * 1024 * 1024:], 1_000_001):
            yield chunk

    task = asyncio.create_task(pipeline.run(body()))
    await asyncio.wait_for(arrived.wait(), 10)
    for _ in range(500):
        if len(destination.spooled) >= PART + 2 * 1024 * 1024:
            break
        await asyncio.sleep(0.01)
    # The second part is 3 MiB full: its first MiBs are staged already.
    assert len(destination.spooled) >= PART + 2 * 1024 * 1024
    more.set()
    destination.hold.set()
    await task
    assert b"".join(part for _, part in destination.sent) == data[:3 * PART]
    assert destination.from_start == [PART, 2 * PART, 3 * PART]
    assert bytes(destination.spooled) == data
    # Written a step at a time, each from a block boundary (O_DIRECT takes whole blocks).
    assert len(destination.spool_offsets) > 3
    assert all(offset % 4096 == 0 for offset in destination.spool_offsets)
async def test_the_body_hash_does_not_wait_for_the_staging_writes() -> None:
    """A part's request body is hashed as its bytes arrive even while the disk is slow:
    the staging writes have a chain of their own (one chain for both let the body's hash,
    all the part's send needs besides its staging, fall behind by the disk's latency)."""
    destination = Destination()
    destination.spool_hold = asyncio.Event()  # no staging write ends for now
    pipeline = _pipeline(destination, places=4)
    step = step_of(PART)
    data = os.urandom(PART + step + step // 2)  # the second part not yet full
    arrived, more = asyncio.Event(), asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        async for chunk in _body(data, step // 2):
            yield chunk
        arrived.set()
        await more.wait()

    task = asyncio.create_task(pipeline.run(body()))
    await asyncio.wait_for(arrived.wait(), 10)
    assert pipeline._filling is not None and pipeline._body_step is not None
    await asyncio.wait_for(asyncio.shield(pipeline._body_step), 10)  # hashed, none staged
    assert destination.spooled == bytearray()
    assert pipeline._filling.handed == step
    assert destination.sent == []  # the first part waits for its staging
    destination.spool_hold.set()
    more.set()
    await task
    assert b"".join(part for _, part in destination.sent) == data[:PART]
    assert bytes(destination.spooled) == data


async def test_a_filling_part_is_prepared_in_two_steps(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each step is a thread hop for its body hash and one for its staging write: a 10 MiB
    part arriving in 1 MiB reads is handed over in two steps of 5 MiB (five of 2 MiB cost
    the event loop and the kernel 0.1 CPU-s per GiB more)."""
    hashed: list[int] = []

    class Counted(partbody.BodyHash):
        def update(self, chunks: Sequence[partbody.Buffer]) -> None:
            hashed.append(sum(len(memoryview(chunk)) for chunk in chunks))
            super().update(chunks)

    monkeypatch.setattr(part_pipeline, "BodyHash", Counted)
    destination = Destination()
    size = 2 * MIN_PART
    pipeline = _pipeline(destination, part_size=size)
    data = os.urandom(3 * size)
    await pipeline.run(_body(data))
    assert b"".join(part for _, part in destination.sent) == data
    # The first part is prepared from its cut (one step), each one after it in two.
    assert hashed == [size] + [size // 2] * 4
    assert destination.spool_offsets == [0] + [size + n * size // 2 for n in range(4)]


async def test_a_part_sent_by_another_process_before_is_not_counted_as_sent_here() -> None:
    """The upload continues where another process (or an earlier life of this one) left
    it: the parts it sends are not all of the upload, so it never says they are."""
    destination = Destination()
    destination.spooled = bytearray(PART)  # staged by the process before
    pipeline = _pipeline(destination, committed=PART)
    await pipeline.run(_body(os.urandom(PART)))
    assert [first for first, _ in destination.sent] == [PART]
    assert destination.from_start == []


async def test_a_part_ecr_has_is_not_held_while_the_next_one_fills() -> None:
    """Once ECR holds a part, the pipeline lets go of its bytes: each upload waiting for a
    place kept its last part (10 MiB) alive, half the peak under 32 concurrent uploads."""
    destination = Destination()
    pipeline = _pipeline(destination)
    data = os.urandom(2 * PART)
    held: list[bool] = []

    async def body() -> AsyncIterator[bytes]:
        async for chunk in _body(data[:PART]):
            yield chunk
        assert pipeline._in_flight is not None
        await asyncio.wait([pipeline._in_flight])  # the first part's call is over
        held.append(destination.parts[0]() is not None)
        async for chunk in _body(data[PART:]):
            yield chunk

    await pipeline.run(body())
    assert [first for first, _ in destination.sent] == [0, PART]
    assert held == [False]


async def test_a_tail_of_at_least_the_minimum_goes_up_at_the_end() -> None:
    destination = Destination()
    carried = os.urandom(PART - 5)
    pipeline = _pipeline(destination, tail=carried)
    destination.spooled += carried  # staged by the request that received it
    await pipeline.run(_body(b"12345678"))
    assert destination.sent == [(0, (carried + b"12345678")[:PART])]
    assert destination.saved == [(PART, PART + 3, b"678")]
    assert bytes(destination.spooled) == carried + b"12345678"


async def test_a_failed_send_keeps_one_part_as_tail_and_is_raised() -> None:
    destination = Destination(refuse=RuntimeError("ECR refused"), refuse_at=PART)
    pipeline = _pipeline(destination, places=2)
    data = os.urandom(4 * PART)
    with pytest.raises(RuntimeError, match="ECR refused"):
        await pipeline.run(_body(data))
    assert [first for first, _ in destination.sent] == [0]
    # ECR holds one part; of the rest the session keeps one part, the client resends more.
    assert destination.saved == [(PART, 2 * PART, data[PART:2 * PART])]
    assert isinstance(pipeline.failure, RuntimeError)
    assert pipeline._places._value == 2  # every place given back
    assert pipeline.cut_parts == []


async def test_a_body_error_is_raised_after_the_session_is_saved() -> None:
    destination = Destination()
    pipeline = _pipeline(destination)

    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 100
        raise OciError(SIZE_INVALID)

    with pytest.raises(OciError):
        await pipeline.run(body())
    assert destination.saved == [(0, 100, b"a" * 100)]


async def test_a_client_gone_mid_body_keeps_what_arrived() -> None:
    destination = Destination()
    pipeline = _pipeline(destination)

    async def body() -> AsyncIterator[bytes]:
        yield b"b" * 100
        raise ConnectionResetError

    await pipeline.run(body())
    assert destination.saved == [(0, 100, b"b" * 100)]


async def test_a_cancelled_request_is_cancelled_and_still_saved() -> None:
    destination = Destination()
    destination.hold = asyncio.Event()  # ECR never answers
    pipeline = _pipeline(destination, places=2)
    data = os.urandom(PART + 7)
    task = asyncio.create_task(pipeline.run(_body(data)))
    await asyncio.wait_for(destination.sending.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # never swallowed
    assert pipeline.cancelled
    assert destination.sent == []
    # The abandoned part is tail again: one part of what arrived is kept.
    assert destination.saved == [(0, PART, data[:PART])]
    assert pipeline._places._value == 2


async def test_cancel_abandons_the_part_in_flight() -> None:
    destination = Destination()
    destination.hold = asyncio.Event()
    pipeline = _pipeline(destination)
    pipeline.buffered(os.urandom(PART))
    cut = await pipeline.cut(PART)
    pipeline._in_flight = asyncio.create_task(pipeline.send(cut))
    await asyncio.wait_for(destination.sending.wait(), 10)
    pipeline.cancel()
    await pipeline.settle()
    assert isinstance(pipeline.failure, asyncio.CancelledError)
    assert pipeline.cut_parts == [cut]  # not acknowledged
    await pipeline.wind_up()
    assert destination.saved[-1][:2] == (0, PART)


async def test_settle_records_a_failure_without_raising_it() -> None:
    destination = Destination(refuse=RuntimeError("no"))
    pipeline = _pipeline(destination)
    pipeline.buffered(os.urandom(PART))
    pipeline._in_flight = asyncio.create_task(pipeline.send(await pipeline.cut(PART)))
    await pipeline.settle()
    pipeline.failed(ValueError("later"))
    assert isinstance(pipeline.failure, RuntimeError)  # the first failure is reported


async def test_realign_skips_what_ecr_holds() -> None:
    pipeline = _pipeline(Destination(), tail=b"0123456789", committed=100)
    rest = pipeline.realign(104, b"0123456789")
    assert rest == b"456789"
    assert (pipeline.session.committed, pipeline.session.received) == (104, 110)
    assert pipeline.realign(120, b"") == b""
    assert (pipeline.session.committed, pipeline.session.received) == (120, 120)


async def test_out_of_step_becomes_a_retry_from_the_range() -> None:
    destination = Destination(refuse=OutOfStep(PART // 2))
    pipeline = _pipeline(destination)
    data = os.urandom(PART + 10)
    with pytest.raises(OciError) as raised:
        await pipeline.run(_body(data))
    assert raised.value.error.code == "UNAVAILABLE"
    assert raised.value.headers["Range"] == f"0-{PART + 9}"
    assert destination.saved == [(PART // 2, PART + 10, data[PART // 2:])]
