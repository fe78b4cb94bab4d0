"""Socket reads sized to a request body: fewer, larger reads of a layer's bytes.

A server reading a large body wakes for every few dozen KiB the kernel has queued, and each
wake-up is a round of Python work (the event loop, the HTTP parser, the body's reader, the
consumer): its cost is per read, not per byte. While a body of known length is read, the
transport reads up to ``READ_SIZE`` bytes at a time (asyncio's default is 256 KiB) and, with
``SO_RCVLOWAT``, the kernel reports the socket readable only once that many bytes are
queued, so a fast sender's body arrives in reads of that size. Measured on 512 MiB pushes:
the gateway made 4,900 reads per push at first, 3,100 with 256 KiB reads and the mark (8%
less CPU), 1,600 with 1 MiB reads (another 8-12% less CPU, in the emulator too).

Three rules keep it from ever holding bytes back:

* the mark never exceeds what the body still owes (``Content-Length`` less what was read), so
  its last bytes wake the reader as soon as they are all there;
* a wait that times out while the kernel holds bytes below the mark was no stall: the mark
  drops to one byte for the rest of the body (a slow sender is read as before);
* the mark is one byte again once the body's reading ends, however it ends, so the next
  request on the connection is read as soon as its first bytes come; the read size is the
  transport's own again too.

Linux only (elsewhere the mark's semantics differ); bodies of unknown length (chunked) are
read as before.
"""

from __future__ import annotations

import array
import fcntl
import socket
import sys
import termios
from typing import Any

READ_SIZE = 1024 * 1024  # the largest socket read of a body


class BodyReads:
    """The receive low-water mark of the connection a body arrives on, while it is read."""

    def __init__(self, transport: Any, length: int | None) -> None:
        sock = transport.get_extra_info("socket") if transport is not None else None
        usable = sys.platform == "linux" and length is not None and sock is not None \
            and sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET,
                                                                     socket.AF_INET6)
        self._socket = sock if usable else None
        self._length = length or 0
        self._mark = 1
        # asyncio's selector transport reads at most ``max_size`` bytes a time; a transport
        # without one (another event loop) keeps its own reads and only gets the mark.
        own = getattr(transport, "max_size", None) if usable else None
        self._transport = transport if isinstance(own, int) else None
        self._own_size = own if isinstance(own, int) else 0
        self._size = self._own_size

    def before_wait(self, received: int) -> None:
        """About to wait for more of the body, of which ``received`` bytes were read."""
        if self._socket is not None:
            owed = min(READ_SIZE, self._length - received)
            self._set(max(1, owed))
            self._read(max(self._own_size, owed))

    def stalled(self) -> bool:
        """A wait timed out: True for a real stall; False when the kernel holds bytes under
        the mark (then lowered to one byte for the rest of the body)."""
        if self._socket is None or self._mark == 1:
            return True
        queued = array.array("i", [0])
        try:
            fcntl.ioctl(self._socket.fileno(), termios.FIONREAD, queued)
        except OSError:
            queued[0] = 0
        self.close()
        self._socket = None  # a slow sender: read as it comes from here on
        return queued[0] == 0

    def close(self) -> None:
        if self._socket is not None:
            self._set(1)
        self._read(self._own_size)

    def _set(self, mark: int) -> None:
        if mark == self._mark or self._socket is None:
            return
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, mark)
        except OSError:  # the connection is gone: nothing left to read anyway
            self._socket = None
            return
        self._mark = mark

    def _read(self, size: int) -> None:
        if self._transport is not None and size != self._size:
            self._transport.max_size = size
            self._size = size
