"""Appending a stream of bytes to a file with ``O_DIRECT``, from reused page-aligned buffers.

A write through the page cache costs the kernel a copy into freshly allocated cache pages; on
the virtual machines measured here (whose idle memory the host takes back) that is 1.0-1.6
CPU-s per GiB, several times the bytes' sha256. A direct write from a buffer that is used
again and again costs a copy into that buffer only. Full blocks (``BUFFER`` bytes, at aligned
offsets) go out with ``O_DIRECT``, a few at a time by worker threads while the next ones fill;
the unaligned tail goes through the page cache. Where ``O_DIRECT`` is refused (tmpfs, other
file systems without direct I/O) every byte is written through the page cache, as before.

Readers of the same file keep using an ordinary descriptor: the kernel keeps the page cache
coherent with direct writes, and ``written`` (advanced as each block lands, in order) tells
how far they may read.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

BUFFER = 1 << 20  # a multiple of every logical block size (O_DIRECT's alignment)
IN_FLIGHT = 8  # blocks of one file on their way to the disk at once (measured: 1 is 3x slower)
_SPARE = 32  # buffers kept for the next files (reused: no fresh pages to fault in)
_spare: list[mmap.mmap] = []
_disk = ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix="direct-write")


class DirectAppender:
    """Appends to ``fd`` (an ordinary descriptor, from offset 0), called from one thread.
    ``on_written(n)`` is called, from any thread but one call at a time, each time the file
    holds the first ``n`` bytes."""

    def __init__(self, fd: int, on_written: Callable[[int], None]) -> None:
        self._fd = fd
        self._on_written = on_written
        self._direct = _open_direct(fd)
        self._buffer: mmap.mmap | None = None
        self._filled = 0
        self._offset = 0  # where the current buffer goes in the file
        self._writes: deque[tuple[Future[None], mmap.mmap]] = deque()
        # Blocks land out of order; the bytes in the file are reported in order.
        self._lock = threading.Lock()
        self._retired = 0  # blocks written and taken off ``_writes``
        self._reported = 0
        self._failed = False  # a block did not land: nothing after it is reported

    @property
    def direct(self) -> bool:
        return self._direct is not None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if self._direct is None:
            _pwrite(self._fd, view, self._offset)
            self._offset += len(view)
            self._report(self._offset)
            return
        while view:
            if self._buffer is None:
                self._buffer = self._take_buffer()
            n = min(len(view), BUFFER - self._filled)
            self._buffer[self._filled:self._filled + n] = view[:n]
            self._filled += n
            view = view[n:]
            if self._filled == BUFFER:
                future = _disk.submit(self._write_block, self._buffer, self._offset)
                with self._lock:
                    self._writes.append((future, self._buffer))
                future.add_done_callback(self._landed)
                self._offset += BUFFER
                self._buffer, self._filled = None, 0

    def finish(self) -> None:
        """Every byte written (the tail through the page cache); raise what a write raised."""
        self._drain()
        if self._buffer is not None and self._filled:
            _pwrite(self._fd, memoryview(self._buffer)[:self._filled], self._offset)
            self._offset += self._filled
            self._report(self._offset)
        self.close()

    def close(self) -> None:
        """Stop: wait for the writes under way (they use the descriptor), keep the buffers
        for the next file."""
        self._drain(check=False)
        if self._buffer is not None:
            _give_back(self._buffer)
            self._buffer, self._filled = None, 0
        if self._direct is not None:
            os.close(self._direct)
            self._direct = None

    def _write_block(self, buffer: mmap.mmap, offset: int) -> None:
        direct = self._direct
        assert direct is not None
        try:
            _pwrite(direct, memoryview(buffer), offset)
        except OSError as exc:  # opened, but refused at the write: through the page cache
            if exc.errno != errno.EINVAL:
                raise
            _pwrite(self._fd, memoryview(buffer), offset)

    def _landed(self, _: Future[None] | None = None) -> None:
        """Report the blocks written so far without a gap."""
        with self._lock:
            blocks = self._retired
            for future, _buffer in self._writes:
                if not future.done() or future.exception() is not None:
                    break
                blocks += 1
            self._report_locked(blocks * BUFFER)

    def _report(self, total: int) -> None:
        with self._lock:
            self._report_locked(total)

    def _report_locked(self, total: int) -> None:
        if total > self._reported and not self._failed:
            self._reported = total
            self._on_written(total)

    def _take_buffer(self) -> mmap.mmap:
        if len(self._writes) >= IN_FLIGHT:  # the disk is behind: wait for the oldest write
            buffer, failure = self._retire_oldest()
            if failure is not None:
                _give_back(buffer)
                raise failure
            return buffer
        return _spare.pop() if _spare else mmap.mmap(-1, BUFFER)

    def _retire_oldest(self) -> tuple[mmap.mmap, BaseException | None]:
        future, buffer = self._writes[0]
        failure = _outcome(future)
        self._landed()  # its callback may not have run yet
        with self._lock:
            self._writes.popleft()
            self._retired += 1
            self._failed = self._failed or failure is not None
        return buffer, failure

    def _drain(self, *, check: bool = True) -> None:
        failure: BaseException | None = None
        while self._writes:
            buffer, failed = self._retire_oldest()
            _give_back(buffer)
            failure = failure or failed
        if failure is not None and check:
            raise failure


def _outcome(future: Future[None]) -> BaseException | None:
    try:
        future.result()
    except BaseException as exc:
        return exc
    return None


def _open_direct(fd: int) -> int | None:
    """A second open file description of ``fd``'s file with O_DIRECT (a ``dup`` would share
    the readers' flags), or None where the file system refuses it."""
    if not hasattr(os, "O_DIRECT"):
        return None
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_DIRECT)
    except OSError:
        return None


def _pwrite(fd: int, view: memoryview, offset: int) -> None:
    written = 0
    while written < len(view):
        written += os.pwrite(fd, view[written:], offset + written)


def _give_back(buffer: mmap.mmap) -> None:
    if len(_spare) < _SPARE:
        _spare.append(buffer)
    else:
        buffer.close()
