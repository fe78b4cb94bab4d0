"""One blob's bytes from the upstream into a spool file, followed by any number of readers.

The upstream is read as fast as it sends, in the pieces its connection delivers (never joined:
joining them costs a copy and fresh pages). Two threads of the tee's own (spooler.py) hash
them and write them to an unlinked spool file (on disk; its space is freed with its last
open handle); the event loop hands each piece over with a queue put and is not woken when it
is written. With ``direct`` the spool is written and read back past the page cache
(gateway/disk/direct_io.py says where that pays). Pieces stay in memory until spooled (at
most ``_UNSPOOLED_MAX`` bytes: beyond that the upstream waits), and the latest ``_KEPT``
bytes a while longer. Readers (the ECR upload, every client waiting for the blob) take the
pieces in memory from there and the rest from the file, each at its own pace. A reader never
gets the last byte before the whole blob matched its digest: when it does not (or the
upstream transfer breaks), every reader raises instead, so no complete body of wrong bytes
reaches a client and ECR never completes the upload.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from gateway.disk.direct_io import read_cached, read_direct, reopen_direct
from gateway.oci import errors as oci
from gateway.oci.errors import OciError
from gateway.pullthrough.spooler import Spooler

log = logging.getLogger(__name__)

_READ = 1 << 20
# Bytes received but not yet hashed and spooled: past this the upstream's reads wait for the
# spooler (memory stays bounded when the disk is slower than the network).
_UNSPOOLED_MAX = 16 << 20
# Spooled bytes still kept in memory behind the newest: a client a few pieces behind takes
# them from there (no copy, no read back from the spool in a worker thread).
_KEPT = 4 << 20


class Tee:
    def __init__(self, directory: Path | None, digest: str, size: int | None, *,
                 direct: bool = False) -> None:
        self.digest = digest
        self.size = size
        self._direct = direct  # written and read past the page cache (spooler.py)
        # Unlinked at once: nothing is left behind by a crash.
        self._file = _unnamed_file(directory)
        # Bytes from the upstream so far (the spooler knows how many are in the spool file);
        # those not yet spooled, and the latest _KEPT, are in memory as received, (offset,
        # piece) in order.
        self._received = 0
        self._spooler: Spooler | None = None
        self._in_memory_pieces: collections.deque[tuple[int, bytes]] = collections.deque()
        self._complete = False
        self._failure: str | None = None
        self.retired = False
        self._mismatch = False
        self._changed = asyncio.Event()
        self._clients = 0  # readers serving a client right now

    @property
    def verified(self) -> bool:
        """Every byte is in and matched the digest."""
        return self._complete

    @property
    def received(self) -> int:
        """Bytes from the upstream so far (all of them once verified)."""
        return self._received

    @property
    def finished(self) -> bool:
        return self._complete or self._failure is not None

    async def fill(self, pieces: AsyncIterator[bytes],
                   progress: Callable[[int], None] | None = None) -> None:
        """Spool the upstream's bytes; raise (and fail every reader) when the transfer breaks
        or the bytes do not match the digest."""
        spooler = Spooler(self._file.fileno(), self._direct)
        self._spooler = spooler
        try:
            async for piece in pieces:
                if not piece:
                    continue
                # Readers take the piece from memory at once, sending it while the spooler's
                # thread hashes and writes it (both release the GIL).
                self._in_memory_pieces.append((self._received, piece))
                self._received += len(piece)
                spooler.add(piece)
                self._signal()
                if progress is not None:
                    progress(len(piece))
                self._forget_old_pieces()
                if spooler.failure is not None:
                    raise spooler.failure
                if self._received - spooler.spooled > _UNSPOOLED_MAX:
                    await spooler.written_up_to(self._received - _UNSPOOLED_MAX // 2)
            digest = await spooler.finish()
            if spooler.cached and self._direct:
                log.debug("pull-through of %s: %d of %d bytes spooled through the page cache "
                          "(the disk fell behind)", self.digest, spooler.cached, self._received)
            self._forget_old_pieces()
            if digest != self.digest:
                self._mismatch = True
                raise _mismatch(self.digest)
        except BaseException as exc:
            # The thread writes to the spool's descriptor: stopped before anyone closes it.
            await spooler.abandon()
            self._failure = str(exc) or type(exc).__name__
            self._signal()
            if exc is spooler.failure:  # this gateway's disk, not the upstream
                raise _unspooled(self.digest, exc) from exc
            if isinstance(exc, Exception) and not isinstance(exc, OciError):
                log.warning("pull-through of %s broke off after %d bytes: %s", self.digest,
                            self._received, exc)
                raise _broken(self.digest) from exc  # a connection that broke off
            raise
        self._complete = True
        self._signal()

    @property
    def _spooled(self) -> int:
        """Bytes in the spool file (the spooler's thread advances it)."""
        return 0 if self._spooler is None else self._spooler.spooled

    def _forget_old_pieces(self) -> None:
        """Pieces in the file and behind the latest ``_KEPT`` bytes are read from there."""
        pieces, spooled, kept_from = self._in_memory_pieces, self._spooled, self._received - _KEPT
        while pieces and pieces[0][0] + len(pieces[0][1]) <= min(spooled, kept_from):
            pieces.popleft()

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
        fd = self._file.fileno()
        direct = reopen_direct(fd, os.O_RDONLY) if self._direct else None
        if direct is not None:
            return self._follow(direct, client, read_direct)
        return self._follow(os.dup(fd), client, read_cached)

    async def _follow(self, fd: int, client: bool,
                      read: Callable[[int, int, int], bytes]) -> AsyncGenerator[bytes, None]:
        self._clients += client
        try:
            offset = 0
            while True:
                changed = self._changed
                if self._failure is not None:
                    raise _mismatch(self.digest) if self._mismatch else _broken(self.digest)
                readable = self._readable()
                if offset < readable:
                    pieces = self._in_memory_pieces
                    if pieces and offset >= pieces[0][0]:
                        data = self._in_memory(offset, readable)
                    else:  # in the file: every piece before those in memory is
                        in_file = pieces[0][0] if pieces else readable
                        data = await asyncio.get_running_loop().run_in_executor(
                            None, read, fd, offset, min(min(readable, in_file) - offset, _READ))
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
        """The piece in memory holding ``offset``, up to ``readable``: a reader that keeps up
        takes it whole, without a copy."""
        for start, piece in reversed(self._in_memory_pieces):
            if start <= offset:
                if start == offset and start + len(piece) <= readable:
                    return piece
                return piece[offset - start:readable - start]
        raise AssertionError("an offset past the first piece in memory is in memory")

    def _readable(self) -> int:
        """How far readers may go: the last byte waits for the digest check. With the size
        known only that byte is held back (a reader that keeps up takes each piece whole from
        memory, no copy); bytes beyond the size never reach a reader before the check."""
        if self._complete:
            return self._received
        if self.size is not None:
            return min(self._received, self.size - 1)
        return self._received - 1

    def keep_as(self, path: Path) -> None:
        """Give the verified spool a name (a link where the file system allows it, a copy
        in the kernel otherwise), so the bytes outlive the tee without being written again.
        Blocking: run in a worker thread."""
        if not self._complete:
            raise RuntimeError("only a complete, verified spool is kept")
        fd = self._file.fileno()
        try:
            # An O_TMPFILE file opened without O_EXCL may be linked once it is written:
            # linkat(2) following the descriptor's /proc link (a dir fd makes os.link use
            # linkat with AT_SYMLINK_FOLLOW; plain link(2) would not follow it).
            descriptors = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.link(str(fd), path, src_dir_fd=descriptors, follow_symlinks=True)
            finally:
                os.close(descriptors)
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOENT, errno.EPERM, errno.EOPNOTSUPP):
                raise
        _copy_out(fd, self._received, path)

    def retire(self) -> None:
        """No reader starts after this (the spool's handle is about to close): decided on
        the event loop, where readers start, not by the thread that closes it."""
        self.retired = True

    def close(self) -> None:
        """The spool's own handle (readers keep theirs until they finish)."""
        self._file.close()


def _unnamed_file(directory: Path | None) -> BinaryIO:
    """A file with no name in ``directory``: O_TMPFILE (without O_EXCL, so that
    :meth:`Tee.keep_as` can link it) where the system has it, an unlinked temporary file
    elsewhere."""
    flag = getattr(os, "O_TMPFILE", 0)
    if flag:
        with contextlib.suppress(OSError):  # a file system without O_TMPFILE
            fd = os.open(directory or tempfile.gettempdir(), flag | os.O_RDWR, 0o600)
            return os.fdopen(fd, "w+b", buffering=0)
    return tempfile.TemporaryFile(dir=directory, buffering=0)


def _copy_out(fd: int, size: int, path: Path) -> None:
    """``size`` bytes of ``fd`` into a new file at ``path``, copied by the kernel."""
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        offset = 0
        while offset < size:
            copied = os.sendfile(target, fd, offset, size - offset)
            if copied == 0:
                raise OSError(errno.EIO, "the spool ended early")
            offset += copied
    except BaseException:
        os.close(target)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(target)


def _mismatch(digest: str) -> OciError:
    return OciError(oci.DIGEST_INVALID, {"digest": digest}, status=502,
                    message="the upstream registry sent bytes that do not match the digest")


def _unspooled(digest: str, exc: BaseException) -> OciError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return OciError(oci.UNAVAILABLE, {"digest": digest, "reason": reason},
                    headers={"Retry-After": "1"},
                    message="the gateway could not keep its copy of this blob")


def _broken(digest: str) -> OciError:
    return OciError(oci.UNAVAILABLE, {"digest": digest}, headers={"Retry-After": "1"},
                    message="the upstream registry's transfer of this blob broke off")
