"""A part's hand-off to its writing thread: a slow disk slows the reading of that part's body,
never the event loop that serves every other request."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, cast

import pytest

from ecr_emulator.parts import Handoff, PartWriter


class GatedWriter:
    """A PartWriter stand-in whose writes wait for ``gate``, like a disk that fell behind."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.pieces: list[bytes] = []

    def write(self, piece: bytes) -> None:
        self.gate.wait()
        self.pieces.append(piece)


async def test_a_stalled_writer_does_not_stall_the_event_loop() -> None:
    writer = GatedWriter()
    handoff = Handoff(cast(PartWriter, writer))
    piece = bytes(Handoff.BATCH)
    pieces = [piece[:-1] + bytes([i]) for i in range(Handoff.QUEUED + 4)]
    # Were a write to wait for the disk, only this would let it go on (after a second).
    watchdog = threading.Timer(1.0, writer.gate.set)
    watchdog.start()
    began = time.monotonic()
    for p in pieces:  # more batches than may wait: returns at once all the same
        handoff.write(p)
    assert time.monotonic() - began < 0.5
    watchdog.cancel()
    drained = asyncio.ensure_future(handoff.drain())
    ticks = 0
    for _ in range(5):  # the loop keeps serving others while the disk is stalled
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks == 5 and not drained.done()
    writer.gate.set()
    await asyncio.wait_for(drained, 5)
    await asyncio.to_thread(handoff.finish)
    assert writer.pieces == pieces  # in order, every one


async def test_a_failed_write_is_raised_by_drain_and_finish() -> None:
    class Failing:
        def write(self, piece: bytes) -> None:
            raise OSError(28, "No space left on device")

    handoff = Handoff(cast(Any, Failing()))
    for _ in range(Handoff.QUEUED + 2):
        handoff.write(bytes(Handoff.BATCH))
    with pytest.raises(OSError, match="No space"):
        for _ in range(100):
            await asyncio.wait_for(handoff.drain(), 5)
            await asyncio.sleep(0.01)
    with pytest.raises(OSError, match="No space"):
        await asyncio.to_thread(handoff.finish)


async def test_the_loop_is_woken_only_while_drain_waits() -> None:
    """A wake-up costs the event loop a round of work: a writer that keeps up wakes it once
    (when the part ends), not once per batch."""
    writer = GatedWriter()
    writer.gate.set()
    handoff = Handoff(cast(PartWriter, writer))
    loop = asyncio.get_running_loop()
    wakes = 0

    class CountingLoop:
        def call_soon_threadsafe(self, callback: Any, *args: Any) -> Any:
            nonlocal wakes
            wakes += 1
            return loop.call_soon_threadsafe(callback, *args)

        def create_future(self) -> asyncio.Future[None]:
            return loop.create_future()

    handoff._loop = cast(Any, CountingLoop())
    for i in range(20):
        handoff.write(bytes([i]) * Handoff.BATCH)
        await handoff.drain()  # the writer keeps up: nothing to wait for
        await asyncio.sleep(0.005)
    await asyncio.to_thread(handoff.finish)
    assert len(writer.pieces) == 20
    assert wakes == 1, wakes
