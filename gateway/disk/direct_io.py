"""Writing and reading the gateway's own files past the page cache (``O_DIRECT``), and when
that pays.

A write through the page cache copies each byte into a page the kernel allocates for the
file; a read of a file that is not cached allocates the pages too, fills them, then copies.
Where the machine is a virtual machine whose memory balloon reports freed pages to its host
(virtio-balloon free page reporting, as on Firecracker), a page freed a few seconds ago is no
longer backed: touching it again costs a fault in the host. A staged copy or a pull-through
spool, written once and read once or twice, then costs more CPU than anything else the
request does (measured: 2.9 CPU-s per GiB into fresh page-cache pages, 0.2 for the same bytes
written with ``O_DIRECT`` from a reused buffer, 0.19 to overwrite pages already cached;
reading 512 MiB that is not cached, 1.07 CPU-s through the page cache, 0.03 directly).

A direct write goes to the disk at once, where a short-lived page-cache copy often never
does; on a slow disk that is the cost, so elsewhere the page cache stays the default.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

ALIGN = 4096  # O_DIRECT offsets and lengths: a multiple of the logical block size
BUFFER = 1024 * 1024
_REPORTING = 5  # VIRTIO_BALLOON_F_REPORTING: the feature bit of free page reporting
_buffers = threading.local()  # one reused aligned buffer per writing or reading thread


def balloon_reports_free_pages(sys_root: Path = Path("/sys")) -> bool:
    """Whether a virtio memory balloon hands this machine's freed pages back to its host."""
    devices = sys_root / "bus" / "virtio" / "drivers" / "virtio_balloon"
    try:
        features = [device / "features" for device in devices.glob("virtio*")]
        return any(_bit(path.read_text(), _REPORTING) for path in features if path.is_file())
    except OSError:
        return False


def _bit(features: str, bit: int) -> bool:
    """The driver lists its negotiated features as a string of 0/1, bit 0 first."""
    text = features.strip()
    return len(text) > bit and text[bit] == "1"


def reopen_direct(fd: int, flags: int) -> int | None:
    """A second descriptor of the file open as ``fd``, with O_DIRECT (the file may have no
    name: an unlinked or O_TMPFILE file is reopened through /proc); None where the file
    system takes no direct I/O (tmpfs before Linux 6.6)."""
    if not hasattr(os, "O_DIRECT"):
        return None
    try:
        return os.open(f"/proc/self/fd/{fd}", flags | os.O_DIRECT)
    except OSError:
        return None


class DirectWriter:
    """Consecutive bytes into a file from ``offset`` (a multiple of ALIGN): gathered in an
    aligned buffer, each full buffer written through ``direct`` (a descriptor opened with
    O_DIRECT); :meth:`finish` writes the unaligned end through a plain descriptor. Used by
    one thread at a time.

    ``lagging``, asked before each full buffer goes out, says the writer has fallen behind
    what it must keep up with: that buffer then goes through the page cache, which takes it
    at memory speed where a direct write waits for the disk (whole buffers keep the file's
    end aligned for the direct writes after it)."""

    def __init__(self, direct: int, offset: int, buffer: mmap.mmap | None = None, *,
                 buffered: int | None = None,
                 lagging: Callable[[], bool] | None = None) -> None:
        if offset % ALIGN:
            raise ValueError(f"direct writes start at a multiple of {ALIGN}")
        if lagging is not None and buffered is None:
            raise ValueError("writing through the page cache needs a plain descriptor")
        self._direct = direct
        self._buffered = buffered
        self._lagging = lagging
        self._buffer = buffer if buffer is not None else mmap.mmap(-1, BUFFER)
        self._filled = 0
        self.written = offset  # where the bytes in the file end
        self.cached = 0  # bytes that went through the page cache

    def write(self, piece: bytes | memoryview) -> None:
        view = memoryview(piece).cast("B")
        size = len(self._buffer)
        while view:
            n = min(len(view), size - self._filled)
            self._buffer[self._filled:self._filled + n] = view[:n]
            self._filled += n
            view = view[n:]
            if self._filled == size:
                lagging = self._lagging is not None and self._lagging()
                self._flush(size, self._buffered if lagging else None)

    def finish(self, buffered: int | None = None) -> None:
        """Write what is gathered: its whole blocks directly, the rest through ``buffered``
        (or the one given at the start)."""
        self._flush(self._filled - self._filled % ALIGN)
        if self._filled:
            buffered = buffered if buffered is not None else self._buffered
            if buffered is None:
                raise ValueError("an unaligned end needs a plain descriptor")
            _pwrite(buffered, memoryview(self._buffer)[:self._filled], self.written)
            self.written += self._filled
            self.cached += self._filled
            self._filled = 0

    @property
    def unaligned(self) -> bool:
        """Whether :meth:`finish` has bytes for a plain descriptor."""
        return self._filled % ALIGN != 0

    def _flush(self, whole: int, through: int | None = None) -> None:
        if not whole:
            return
        _pwrite(self._direct if through is None else through,
                memoryview(self._buffer)[:whole], self.written)
        self.written += whole
        if through is not None:
            self.cached += whole
        rest = self._filled - whole
        if rest:  # an unaligned end stays at the buffer's start
            self._buffer[:rest] = self._buffer[whole:self._filled]
        self._filled = rest


def write_direct(path: Path, offset: int, pieces: Sequence[bytes | memoryview]) -> bool:
    """Write ``pieces`` into ``path`` at ``offset`` (a multiple of ALIGN), the whole blocks
    with ``O_DIRECT`` and the unaligned end through the page cache. False, with nothing
    written, where the file system takes no direct I/O (tmpfs before Linux 6.6)."""
    if offset % ALIGN or not hasattr(os, "O_DIRECT"):
        return False
    try:
        direct = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    writer = DirectWriter(direct, offset, _buffer(BUFFER))
    try:
        for piece in pieces:
            writer.write(piece)
        buffered = os.open(path, os.O_WRONLY) if writer.unaligned else None
        try:
            writer.finish(buffered)
        finally:
            if buffered is not None:
                os.close(buffered)
    finally:
        os.close(direct)
    return True


def read_direct(fd: int, offset: int, count: int) -> bytes:
    """Up to ``count`` (at most BUFFER) bytes of ``fd`` (opened with O_DIRECT) from
    ``offset``, read from the whole blocks around them; fewer at the end of the file."""
    if count > BUFFER:
        raise ValueError(f"at most {BUFFER} bytes per read")
    buffer = _buffer(BUFFER + ALIGN)
    start = offset - offset % ALIGN
    skip = offset - start
    length = -(-(skip + count) // ALIGN) * ALIGN
    got = os.preadv(fd, [memoryview(buffer)[:length]], start)
    return bytes(buffer[skip:max(skip, min(got, skip + count))])


def read_cached(fd: int, offset: int, count: int) -> bytes:
    """:func:`read_direct`'s counterpart through the page cache (``fd`` opened without
    O_DIRECT)."""
    return os.pread(fd, count, offset)


def _buffer(size: int) -> mmap.mmap:
    """This thread's page-aligned buffer (as O_DIRECT needs) of at least ``size`` bytes; its
    pages stay warm from one use to the next."""
    buffer: mmap.mmap | None = getattr(_buffers, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _buffers.buffer = mmap.mmap(-1, BUFFER + ALIGN)
    return buffer


def _pwrite(fd: int, view: memoryview, offset: int) -> None:
    written = 0
    while written < len(view):
        written += os.pwrite(fd, view[written:], offset + written)
