"""A thread of its own that hashes pieces and appends them to a file, in order.

The event loop hands each piece over with one queue put (no executor future, no wake-up of
the loop when the piece is written); the thread takes them in turn. The loop learns how far
the file has got from :attr:`Spooler.spooled` (a plain integer the thread advances after
each write), and is woken only when it asks to wait: for room
(:meth:`Spooler.written_up_to`) or for the end (:meth:`Spooler.finish`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import queue
import threading


class Spooler:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._pieces: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._hash = hashlib.sha256()
        self.spooled = 0  # bytes in the file (advanced by the thread only)
        self.failure: BaseException | None = None
        self._abandoned = False
        self._done: asyncio.Future[None] = self._loop.create_future()
        # A wait of the loop's: (offset, future), woken once the file reaches the offset.
        self._waiting: tuple[int, asyncio.Future[None]] | None = None
        threading.Thread(target=self._run, name="pullthrough-spool", daemon=True).start()

    def add(self, piece: bytes) -> None:
        self._pieces.put(piece)

    async def written_up_to(self, offset: int) -> None:
        """Wait until the file holds ``offset`` bytes (or the thread failed)."""
        woken = self._loop.create_future()
        self._waiting = (offset, woken)
        if self.spooled < offset and self.failure is None and not self._done.done():
            await woken
        self._waiting = None

    async def finish(self) -> str:
        """Every piece added hashed and written: the sha256 digest of them all."""
        self._pieces.put(None)
        await asyncio.shield(self._done)
        if self.failure is not None:
            raise self.failure
        return f"sha256:{self._hash.hexdigest()}"

    async def abandon(self) -> None:
        """Stop after the piece being written; the file descriptor is then the caller's."""
        self._abandoned = True
        self._pieces.put(None)
        await asyncio.wait([self._done])

    def _run(self) -> None:
        try:
            while (piece := self._pieces.get()) is not None and not self._abandoned:
                self._hash.update(piece)  # both release the GIL
                _write_all(self._fd, piece)
                self.spooled += len(piece)
                self._wake_if_waited()
        except BaseException as exc:  # the disk: told to the loop, which fails the tee
            self.failure = exc
        self._wake_if_waited(True)
        self._wake(self._done)

    def _wake_if_waited(self, always: bool = False) -> None:
        waiting = self._waiting
        if waiting is not None and (always or self.spooled >= waiting[0]):
            self._wake(waiting[1])

    def _wake(self, future: asyncio.Future[None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed (the process stops)
            self._loop.call_soon_threadsafe(_settle, future)


def _write_all(fd: int, piece: bytes) -> None:
    view = memoryview(piece)
    while view:
        view = view[os.write(fd, view):]


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
