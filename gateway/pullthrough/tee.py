"""One blob's bytes from the upstream into a spool file, followed by any number of readers.

The upstream is read as fast as it sends: each chunk is written to an unlinked spool file (on
disk, never held in memory; its space is freed with its last open handle) and hashed. Readers
(the ECR upload, every client waiting for the blob) follow the file as it grows, each at its
own pace. A reader never gets the last byte before the whole blob matched its digest: when
it does not (or the upstream transfer breaks), every reader raises instead, so no complete
body of wrong bytes reaches a client and ECR never completes the upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path

from gateway.oci import errors as oci
from gateway.oci.errors import OciError

_READ = 1 << 20


class Tee:
    def __init__(self, directory: Path | None, digest: str, size: int | None) -> None:
        self.digest = digest
        self.size = size
        # Unlinked at once (O_TMPFILE where available): nothing is left behind by a crash.
        self._file = tempfile.TemporaryFile(dir=directory)
        self._hash = hashlib.sha256()
        # Bytes from the upstream so far; all but the latest chunk are in the spool file.
        self._received = 0
        self._complete = False
        self._failure: str | None = None
        self._mismatch = False
        self._changed = asyncio.Event()
        self._clients = 0  # readers serving a client right now
        # The chunk written last (offset, bytes): readers that keep up take it from here.
        self._recent: tuple[int, bytes] = (0, b"")

    @property
    def finished(self) -> bool:
        return self._complete or self._failure is not None

    async def fill(self, chunks: AsyncIterator[bytes],
                   progress: Callable[[int], None] | None = None) -> None:
        """Spool the upstream's bytes; raise (and fail every reader) when the transfer breaks
        or the bytes do not match the digest."""
        fd = self._file.fileno()
        try:
            async for chunk in chunks:
                # Readers that keep up take the chunk from memory at once, sending it while
                # it is hashed and spooled (hashing and writing release the GIL).
                self._recent = (self._received, chunk)
                self._received += len(chunk)
                self._signal()
                await asyncio.to_thread(self._append, fd, chunk)
                if progress is not None:
                    progress(len(chunk))
            if f"sha256:{self._hash.hexdigest()}" != self.digest:
                self._mismatch = True
                raise _mismatch(self.digest)
        except BaseException as exc:
            self._failure = str(exc) or type(exc).__name__
            self._signal()
            if isinstance(exc, Exception) and not isinstance(exc, OciError):
                raise _broken(self.digest) from exc  # a connection that broke off
            raise
        self._complete = True
        self._signal()

    def _append(self, fd: int, chunk: bytes) -> None:
        self._hash.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]

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
                    start, recent = self._recent
                    if start <= offset < start + len(recent):
                        data = recent[offset - start:readable - start]
                    else:  # before the latest chunk: in the file already
                        data = await asyncio.to_thread(
                            os.pread, fd, min(min(readable, start) - offset, _READ), offset)
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

    def _readable(self) -> int:
        """How far readers may go: the last byte waits for the digest check. With the size
        known only that byte is held back (a reader that keeps up takes each chunk whole from
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
