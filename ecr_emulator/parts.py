"""Appending one layer part to its upload's file as the part arrives.

A PartWriter hashes each piece and writes it at the end of the file; ``commit`` makes the part
durable, ``rollback`` cuts the file back to where the part began, so a refused part leaves no
trace. The pieces go to the disk with ``O_DIRECT`` from a few page-aligned buffers, written
by worker threads while the next pieces arrive: a durable part must reach the disk before it
is acknowledged anyway, and a write through the page cache would cost the CPU a copy into
freshly allocated cache pages (on the virtual machines measured here more than the part's
sha256) before the fsync writes them out. The part's unaligned tail, and parts that do not
start at an aligned offset, go through the page cache; in durable mode commit's
``fdatasync`` covers both. Without durability the writes are the same and only the syncs
are left out, so that the two modes differ by what durability costs and nothing else.

A Handoff runs a writer's writes, in order, in a thread of the part's own, so that hashing and
writing one piece overlaps with receiving, checking the signature of and decoding the next.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

ALIGN = 4096  # O_DIRECT offsets and lengths: a multiple of the logical block size
BUFFER = 1024 * 1024
IN_FLIGHT = 4  # buffers of one part on their way to the disk at once
_SPARE = 32  # buffers kept for the next parts (reused: no fresh pages to fault in)
_spare: list[mmap.mmap] = []
_disk = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ecr-emulator-disk")


class PartWriter:
    def __init__(self, path: Path, offset: int, hasher: Any | None, *, durable: bool,
                 on_commit: Callable[[], None] | None = None) -> None:
        self.hasher = hasher
        self.start = self.end = offset
        self._durable = durable
        self._on_commit = on_commit
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        self._direct: int | None = None
        self._buffer: mmap.mmap | None = None
        self._filled = 0
        self._flushed = offset  # where the current buffer goes in the file
        self._writes: deque[tuple[Future[None], mmap.mmap]] = deque()
        try:
            # Bytes a crashed or refused attempt left beyond ``offset`` are not the layer's.
            if os.fstat(self._fd).st_size > offset:
                os.ftruncate(self._fd, offset)
            if offset % ALIGN == 0 and hasattr(os, "O_DIRECT"):
                try:
                    self._direct = os.open(path, os.O_WRONLY | os.O_DIRECT)
                except OSError:  # a file system without direct I/O (tmpfs)
                    self._direct = None
        except BaseException:
            self._close()
            raise

    @property
    def size(self) -> int:
        return self.end - self.start

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._fd is not None
        view = memoryview(data)
        if self.hasher is not None:
            self.hasher.update(view)
        self.end += len(view)
        if self._direct is None:
            _pwrite(self._fd, view, self.end - len(view))
            return
        while view:
            if self._buffer is None:
                self._buffer = self._take_buffer()
            n = min(len(view), BUFFER - self._filled)
            self._buffer[self._filled:self._filled + n] = view[:n]
            self._filled += n
            view = view[n:]
            if self._filled == BUFFER:
                assert self._direct is not None
                self._writes.append((_disk.submit(_pwrite, self._direct,
                                                  memoryview(self._buffer), self._flushed),
                                     self._buffer))
                self._flushed += BUFFER
                self._buffer, self._filled = None, 0

    def commit(self) -> None:
        """Make the part durable (its bytes and the file's size; the file's name if new)."""
        assert self._fd is not None
        try:
            self._drain()
            if self._buffer is not None and self._filled:  # the tail, through the page cache
                _pwrite(self._fd, memoryview(self._buffer)[:self._filled], self._flushed)
            if self._durable:
                os.fdatasync(self._fd)
        finally:
            self._close()
        if self._on_commit is not None:
            self._on_commit()

    def rollback(self) -> None:
        """Cut the file back to where the part began (no-op once committed)."""
        if self._fd is None:
            return
        try:
            self._drain(check=False)
            os.ftruncate(self._fd, self.start)
        finally:
            self._close()

    def _take_buffer(self) -> mmap.mmap:
        if len(self._writes) >= IN_FLIGHT:  # the disk is behind: wait for the oldest write
            future, buffer = self._writes.popleft()
            future.result()
            return buffer
        return _spare.pop() if _spare else mmap.mmap(-1, BUFFER)

    def _drain(self, *, check: bool = True) -> None:
        failure: BaseException | None = None
        while self._writes:
            future, buffer = self._writes.popleft()
            try:
                future.result()
            except BaseException as exc:
                failure = failure or exc
            _give_back(buffer)
        if failure is not None and check:
            raise failure

    def _close(self) -> None:
        if self._buffer is not None:
            _give_back(self._buffer)
            self._buffer = None
        for fd in (self._direct, self._fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._direct = None


class Handoff:
    """Gives a PartWriter's pieces to a thread of their own, in batches of about BATCH bytes
    (one wake-up each). ``write`` never blocks the event loop; the body's reader awaits
    ``drain`` after each chunk, which returns once at most QUEUED batches wait (a slow disk
    slows this request's reading, not every other request's)."""

    BATCH = 256 * 1024
    QUEUED = 8

    def __init__(self, writer: PartWriter) -> None:
        self.writer = writer
        self.size = 0  # bytes handed over
        self._batch: list[bytes] = []
        self._batched = 0
        self._queue: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()
        self._failure: BaseException | None = None
        self._loop = asyncio.get_running_loop()
        self._room: asyncio.Future[None] | None = None  # drain waiting for the thread
        self._thread = threading.Thread(target=self._run, name="ecr-emulator-part", daemon=True)
        self._thread.start()

    def write(self, piece: bytes) -> None:
        if self._failure is not None:
            raise self._failure
        self._batch.append(piece)
        self._batched += len(piece)
        self.size += len(piece)
        if self._batched >= self.BATCH:
            self._queue.put(self._batch)
            self._batch, self._batched = [], 0

    async def drain(self) -> None:
        while self._queue.qsize() > self.QUEUED and self._thread.is_alive():
            # Set and checked on the loop's thread, woken from the writer's after each batch:
            # a batch taken in between is seen by the size check above.
            self._room = self._loop.create_future()
            await self._room
        if self._failure is not None:
            raise self._failure

    def finish(self) -> None:
        """Wait until every piece handed over is written; raise what a write raised."""
        if self._thread.is_alive():
            if self._batch:
                self._queue.put(self._batch)
                self._batch, self._batched = [], 0
            self._queue.put(None)
            self._thread.join()
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            for piece in batch:
                if self._failure is None:
                    try:
                        self.writer.write(piece)
                    except BaseException as exc:
                        self._failure = exc
            # The loop is woken only when drain waits: a wake-up costs it a round of work.
            # drain sets _room only with more than QUEUED batches queued, so a _room set
            # after this look is seen after the next batch.
            room = self._room
            if room is not None and not room.done():
                self._loop.call_soon_threadsafe(self._wake)
        self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if self._room is not None and not self._room.done():
            self._room.set_result(None)


def _pwrite(fd: int, view: memoryview, offset: int) -> None:
    written = 0
    while written < len(view):
        written += os.pwrite(fd, view[written:], offset + written)


def _give_back(buffer: mmap.mmap) -> None:
    if len(_spare) < _SPARE:
        _spare.append(buffer)
    else:
        buffer.close()
