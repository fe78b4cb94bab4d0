"""Two threads of their own that hash pieces and append them to a file, in order.

The event loop hands each piece over with one queue put per thread (no executor future, no
wake-up of the loop when the piece is written). One thread hashes, the other writes, side by
side: a direct write waits for the disk, and the hash need not wait with it. The loop learns
how far the file has got from :attr:`Spooler.spooled` (a plain integer the writing thread
advances after each write), and is woken only when it asks to wait: for room
(:meth:`Spooler.written_up_to`) or for the end (:meth:`Spooler.finish`).

With ``direct``, the file is written past the page cache where it allows that
(gateway/disk/direct_io.py): the bytes are gathered into whole blocks, so the file lags the
pieces by at most one buffer until the end. Where the disk falls behind, blocks go through
the page cache until it has caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mmap
import os
import queue
import threading
from collections.abc import Callable
from functools import partial

from gateway.disk.direct_io import DirectWriter, reopen_direct

# How far the direct writes may fall behind the pieces handed over before the next blocks go
# through the page cache instead: a disk slower than the upstream, or a writing thread kept
# off the CPU a while, must not hold the upstream back (the tee makes it wait at 16 MiB,
# tee.py's _UNSPOOLED_MAX). At 8 MiB a busy 2-CPU machine sent 9-21% of a cold pull's
# blocks through the page cache, at 12 MiB 2-3%.
_DIRECT_LAG_MAX = 12 << 20
# Direct writes of this many bytes at a time: the disk measured here took 1.6 GB/s in 4 MiB
# writes against 1.4 in 1 MiB ones.
_DIRECT_WRITE = 4 << 20


class Spooler:
    def __init__(self, fd: int, direct: bool = False) -> None:
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._to_hash: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._to_write: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._hash = hashlib.sha256()
        self.spooled = 0  # bytes in the file (advanced by the writing thread only)
        self._added = 0  # bytes handed over (advanced by the loop only)
        self.cached = 0  # of the spooled bytes, those written through the page cache
        self.failure: BaseException | None = None
        self._abandoned = False
        self._hashed = self._loop.create_future()
        self._written = self._loop.create_future()
        # A wait of the loop's: (offset, future), woken once the file reaches the offset.
        self._waiting: tuple[int, asyncio.Future[None]] | None = None
        file = SpoolFile(fd, direct, lagging=lambda: self._added - self.spooled > _DIRECT_LAG_MAX)
        self._start(self._hashing, self._hashed, "pullthrough-hash")
        self._start(partial(self._writing, file), self._written, "pullthrough-spool")

    def add(self, piece: bytes) -> None:
        self._added += len(piece)
        self._to_hash.put(piece)
        self._to_write.put(piece)

    async def written_up_to(self, offset: int) -> None:
        """Wait until the file holds ``offset`` bytes (or a thread failed)."""
        woken = self._loop.create_future()
        self._waiting = (offset, woken)
        if self.spooled < offset and self.failure is None and not self._written.done():
            await woken
        self._waiting = None

    async def finish(self) -> str:
        """Every piece added hashed and written: the sha256 digest of them all."""
        self._to_hash.put(None)
        self._to_write.put(None)
        await asyncio.shield(asyncio.gather(self._hashed, self._written))
        if self.failure is not None:
            raise self.failure
        return f"sha256:{self._hash.hexdigest()}"

    async def abandon(self) -> None:
        """Stop after the pieces being hashed and written; the file descriptor is then the
        caller's."""
        self._abandoned = True
        self._to_hash.put(None)
        self._to_write.put(None)
        await asyncio.wait([self._hashed, self._written])

    def _start(self, work: Callable[[], None], done: asyncio.Future[None], name: str) -> None:
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # the disk: told to the loop, which fails the tee
                self.failure = exc
            self._wake_if_waited(True)
            self._wake(done)

        threading.Thread(target=run, name=name, daemon=True).start()

    def _hashing(self) -> None:
        while (piece := self._to_hash.get()) is not None and not self._abandoned:
            self._hash.update(piece)  # releases the GIL

    def _writing(self, file: SpoolFile) -> None:
        try:
            while (piece := self._to_write.get()) is not None and not self._abandoned:
                self.spooled = file.write(piece)
                self._wake_if_waited()
            if not self._abandoned:
                self.spooled = file.finish()
                self.cached = file.cached
        finally:
            file.close()

    def _wake_if_waited(self, always: bool = False) -> None:
        waiting = self._waiting
        if waiting is not None and (always or self.spooled >= waiting[0]):
            self._wake(waiting[1])

    def _wake(self, future: asyncio.Future[None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed (the process stops)
            self._loop.call_soon_threadsafe(_settle, future)


class SpoolFile:
    """The spool's bytes into its file, in order, from one thread at a time: with
    ``direct``, in whole blocks past the page cache where the file system allows it, the
    blocks through the page cache while ``lagging`` says so, the unaligned end through it at
    :meth:`finish`; else plain writes."""

    def __init__(self, fd: int, direct: bool,
                 lagging: Callable[[], bool] | None = None) -> None:
        self._fd = fd
        self._direct = reopen_direct(fd, os.O_WRONLY) if direct else None
        self._writer = None if self._direct is None else DirectWriter(
            self._direct, 0, mmap.mmap(-1, _DIRECT_WRITE), buffered=fd, lagging=lagging)
        self._written = 0

    def write(self, piece: bytes) -> int:
        """Append ``piece``; the bytes in the file now (with ``direct``, short of the
        gathered ones)."""
        if self._writer is None:
            _write_all(self._fd, piece)
            self._written += len(piece)
            return self._written
        self._writer.write(piece)
        return self._writer.written

    def finish(self) -> int:
        """Write what is gathered; the bytes in the file."""
        if self._writer is None:
            return self._written
        self._writer.finish()
        return self._writer.written

    @property
    def cached(self) -> int:
        """With ``direct``, the bytes that went through the page cache."""
        return 0 if self._writer is None else self._writer.cached

    def close(self) -> None:
        """The direct descriptor (the file's own is the caller's)."""
        direct, self._direct = self._direct, None
        if direct is not None:
            os.close(direct)


def _write_all(fd: int, piece: bytes) -> None:
    view = memoryview(piece)
    while view:
        view = view[os.write(fd, view):]


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
