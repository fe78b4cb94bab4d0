"""One blob's bytes from the upstream into a spool file, followed by any number of readers.

The upstream is read as fast as it sends, in the pieces its connection delivers (never joined:
joining them costs a copy and fresh pages). A worker thread hashes them and writes them to an
unlinked spool file (on disk; its space is freed with its last open handle), a batch at a
time: whatever arrived while it worked on the previous batch, so the event loop hands it work
once per batch, not once per piece. Pieces stay in memory only until spooled (at most
``_UNSPOOLED_MAX`` bytes: beyond that the upstream waits). Readers (the ECR upload, every
client waiting for the blob) take the pieces not yet spooled from memory and the rest from
the file, each at its own pace. A reader never gets the last byte before the whole blob
matched its digest: when it does not (or the upstream transfer breaks), every reader raises
instead, so no complete body of wrong bytes reaches a client and ECR never completes the
upload.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path

from gateway.oci import errors as oci
from gateway.oci.errors import OciError

_READ = 1 << 20
# Bytes received but not yet hashed and spooled: past this the upstream's reads wait for the
# worker (memory stays bounded when the disk is slower than the network).
_UNSPOOLED_MAX = 16 << 20


class Tee:
    def __init__(self, directory: Path | None, digest: str, size: int | None) -> None:
        self.digest = digest
        self.size = size
        # Unlinked at once (O_TMPFILE where available): nothing is left behind by a crash.
        self._file = tempfile.TemporaryFile(dir=directory)
        self._hash = hashlib.sha256()
        # Bytes from the upstream so far, and how many of them are in the spool file; the
        # others are in memory as received, (offset, piece) in order.
        self._received = 0
        self._spooled = 0
        self._unspooled: collections.deque[tuple[int, bytes]] = collections.deque()
        self._complete = False
        self._failure: str | None = None
        self._mismatch = False
        self._changed = asyncio.Event()
        self._clients = 0  # readers serving a client right now

    @property
    def finished(self) -> bool:
        return self._complete or self._failure is not None

    async def fill(self, pieces: AsyncIterator[bytes],
                   progress: Callable[[int], None] | None = None) -> None:
        """Spool the upstream's bytes; raise (and fail every reader) when the transfer breaks
        or the bytes do not match the digest."""
        loop = asyncio.get_running_loop()
        fd = self._file.fileno()
        batch: list[bytes] = []
        writing: asyncio.Future[int] | None = None
        try:
            async for piece in pieces:
                if not piece:
                    continue
                # Readers take the piece from memory at once, sending it while it waits for
                # the worker (hashing and writing release the GIL).
                self._unspooled.append((self._received, piece))
                self._received += len(piece)
                self._signal()
                batch.append(piece)
                if (writing is not None and not writing.done()
                        and self._received - self._spooled < _UNSPOOLED_MAX):
                    continue  # the worker is busy: the piece joins the next batch
                if writing is not None:
                    await self._spooled_through(writing, progress)
                writing = loop.run_in_executor(None, self._append, fd, batch, self._received)
                batch = []
            if writing is not None:
                await self._spooled_through(writing, progress)
            if batch:
                writing = loop.run_in_executor(None, self._append, fd, batch, self._received)
                await self._spooled_through(writing, progress)
            if f"sha256:{self._hash.hexdigest()}" != self.digest:
                self._mismatch = True
                raise _mismatch(self.digest)
        except BaseException as exc:
            if writing is not None:
                # The worker writes to the spool's descriptor: done before anyone closes it.
                await asyncio.wait([writing])
            self._failure = str(exc) or type(exc).__name__
            self._signal()
            if isinstance(exc, Exception) and not isinstance(exc, OciError):
                raise _broken(self.digest) from exc  # a connection that broke off
            raise
        self._complete = True
        self._signal()

    def _append(self, fd: int, batch: list[bytes], through: int) -> int:
        """Hash and spool one batch (in a worker); the offset the spool then reaches."""
        for piece in batch:
            self._hash.update(piece)
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view):]
        return through

    async def _spooled_through(self, writing: asyncio.Future[int],
                               progress: Callable[[int], None] | None) -> None:
        """Wait for the worker's batch; its pieces are then read from the file."""
        before, self._spooled = self._spooled, await writing
        if progress is not None:
            progress(self._spooled - before)
        while self._unspooled and self._unspooled[0][0] < self._spooled:
            self._unspooled.popleft()

    def _signal(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def quiet(self, patience: float) -> None:
        """Wait until every byte is in and no client is reading (at most ``patience``
        seconds once the bytes are in)."""
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            changed = self._changed
            if self.finished:
                deadline = deadline if deadline is not None else loop.time() + patience
                if self._clients == 0 or loop.time() >= deadline:
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(),
                                       None if deadline is None else deadline - loop.time())

    def reader(self, client: bool = False) -> AsyncGenerator[bytes, None]:
        """Every byte of the blob from the first, as it arrives. The reader holds a handle of
        its own, so it outlives :meth:`close`."""
        if self._file.closed:
            raise _broken(self.digest)  # the copy is over: the blob is read from storage
        return self._follow(os.dup(self._file.fileno()), client)

    async def _follow(self, fd: int, client: bool) -> AsyncGenerator[bytes, None]:
        self._clients += client
        try:
            offset = 0
            while True:
                changed = self._changed
                if self._failure is not None:
                    raise _mismatch(self.digest) if self._mismatch else _broken(self.digest)
                readable = self._readable()
                if offset < readable:
                    if offset >= self._spooled:
                        data = self._in_memory(offset, readable)
                    else:
                        data = await asyncio.get_running_loop().run_in_executor(
                            None, os.pread, fd,
                            min(min(readable, self._spooled) - offset, _READ), offset)
                    if not data:
                        raise _broken(self.digest)
                    offset += len(data)
                    yield data
                    continue
                if self._complete:
                    return
                await changed.wait()
        finally:
            os.close(fd)
            self._clients -= client
            self._signal()

    def _in_memory(self, offset: int, readable: int) -> bytes:
        """The received piece holding ``offset`` (not yet spooled), up to ``readable``: a
        reader that keeps up takes it whole, without a copy."""
        for start, piece in reversed(self._unspooled):
            if start <= offset:
                if start == offset and start + len(piece) <= readable:
                    return piece
                return piece[offset - start:readable - start]
        raise AssertionError("an offset beyond the spool is in memory")

    def _readable(self) -> int:
        """How far readers may go: the last byte waits for the digest check. With the size
        known only that byte is held back (a reader that keeps up takes each piece whole from
        memory, no copy); bytes beyond the size never reach a reader before the check."""
        if self._complete:
            return self._received
        if self.size is not None:
            return min(self._received, self.size - 1)
        return self._received - 1

    def close(self) -> None:
        """The spool's own handle (readers keep theirs until they finish)."""
        self._file.close()


def _mismatch(digest: str) -> OciError:
    return OciError(oci.DIGEST_INVALID, {"digest": digest}, status=502,
                    message="the upstream registry sent bytes that do not match the digest")


def _broken(digest: str) -> OciError:
    return OciError(oci.UNAVAILABLE, {"digest": digest}, headers={"Retry-After": "1"},
                    message="the upstream registry's transfer of this blob broke off")
