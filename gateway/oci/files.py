"""Blob reads served from a local file that is already open.

aiohttp's FileResponse opens its path only when the response starts; a file removed in
between (evicted, or forgotten once an image references it) then becomes a plain-text 404.
Serving from a file opened while the blob was looked up closes that gap: an open file stays
readable after it is unlinked. The bytes go out with sendfile, or to a client on this host
through a small buffer (see :func:`_through_memory`) until it falls behind (then by sendfile
too), or with ``direct`` read past the page cache into that buffer for every client
(gateway/disk/direct_io.py says where that pays);
one ``bytes=`` range is served, and every refused range gets the OCI error body (see
gateway/oci/ranges.py). A HEAD request gets the same headers and no body.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import os
import socket
import sys
from collections.abc import Callable
from typing import BinaryIO

from aiohttp import web

from gateway.disk.direct_io import read_cached, read_direct, reopen_direct
from gateway.oci.ranges import parse_file_range

_PIECE = 1 << 20  # per read, to a client on this host
# Pieces in a row that find a piece's worth of bytes not yet taken by the client's receive
# window: it is behind by its whole socket buffer (megabytes), not by one scheduling delay.
_BEHIND = 4
_SIOCOUTQNSD = 0x894B  # Linux: bytes in a TCP socket's send queue not yet sent


async def send_file(request: web.Request, handle: BinaryIO, size: int,
                    headers: dict[str, str], *, direct: bool = False) -> web.StreamResponse:
    """Serve ``size`` bytes of ``handle`` (whole, or the Range asked for); the file is
    closed afterwards, also on failure."""
    loop = asyncio.get_running_loop()
    try:
        span = parse_file_range(request.headers.get("Range"), size)
        start, end = span if span is not None else (0, size - 1)
        count = end - start + 1
        response = web.StreamResponse(status=200 if span is None else 206, headers=headers)
        response.headers["Accept-Ranges"] = "bytes"
        if span is not None:
            response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        response.content_length = count
        writer = await response.prepare(request)
        # A HEAD answer has the headers alone. aiohttp does not hold back what is written
        # after them: a body would stay in the connection, and a client reusing it would
        # read those bytes as the start of its next answer.
        if count > 0 and request.method != "HEAD":
            transport = request.transport
            if writer is None or transport is None:
                raise ConnectionResetError("client went away")
            direct_fd = reopen_direct(handle.fileno(), os.O_RDONLY) if direct else None
            if direct_fd is not None:
                try:
                    sent = await _through_memory(response, direct_fd, start, count,
                                                 read_direct)
                finally:
                    os.close(direct_fd)
            elif _on_this_host(transport):
                sent = await _through_memory(response, handle.fileno(), start, count,
                                             read_cached, _socket_fd(transport))
                if sent < count and not transport.is_closing():
                    # The client fell behind (or the file ended: sendfile finds no more).
                    rest = await loop.sendfile(transport, handle, start + sent, count - sent)
                    writer.output_size += rest  # bypassed the writer, as below
                    sent += rest
            else:
                # Falls back to reads in worker threads where sendfile is unavailable.
                sent = await loop.sendfile(transport, handle, start, count)
                writer.output_size += sent  # bypassed the writer: counted for the access log
            if sent < count:
                transport.abort()  # the file is shorter than the blob: a broken transfer
                return response
        await response.write_eof()
        return response
    finally:
        loop.run_in_executor(None, handle.close)


def _on_this_host(transport: asyncio.BaseTransport) -> bool:
    """Whether the client is on this host (a loopback address or a Unix socket): a node's
    containerd reading its node-local mirror, a sidecar's workload."""
    peer = transport.get_extra_info("peername")
    if not isinstance(peer, tuple) or not peer:
        return True  # a Unix socket: no address
    try:
        return ipaddress.ip_address(str(peer[0]).partition("%")[0]).is_loopback
    except ValueError:
        return False


def _socket_fd(transport: asyncio.BaseTransport) -> int | None:
    """The descriptor of a transport's TCP socket; None for any other (a Unix socket)."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    fd: int = sock.fileno()
    return fd if fd >= 0 else None


def _unsent(fd: int) -> int:
    """Bytes in the socket's send queue that the peer's window has not taken yet (0 where
    the kernel does not say)."""
    try:
        return int.from_bytes(fcntl.ioctl(fd, _SIOCOUTQNSD, bytes(4)), sys.byteorder,
                              signed=True)
    except OSError:
        return 0


async def _through_memory(response: web.StreamResponse, fd: int, start: int, count: int,
                          read: Callable[[int, int, int], bytes],
                          sock: int | None = None) -> int:
    """Send ``count`` bytes of ``fd`` from ``start`` as reads of ``_PIECE`` bytes (each in a
    worker thread, the next one read while this one is sent); the bytes sent. With ``sock``
    (the client's TCP socket), stop early once a piece's worth of bytes waited in it for
    room in the client's receive window before ``_BEHIND`` pieces in a row: the client
    reads slower than this sends.

    For a client on the same host this is faster than sendfile: the bytes reach its socket
    freshly copied, still in the CPU's cache, where sendfile hands it page-cache pages it
    then reads from memory. Measured reading 256 MiB over loopback: a hashing client took
    0.31-0.35 s by sendfile and 0.24-0.28 s this way (distribution, which copies too:
    0.25-0.28 s); curl 0.15-0.17 s by sendfile and 0.11-0.13 s this way (reads of 256 KiB:
    0.15-0.19 s).

    A client that reads slower than that (containerd, which hands every MiB to its content
    store and waits for the answer before reading on) leaves megabytes queued in the socket:
    bytes wait there tens of milliseconds, out of the CPU's cache by the time it reads them,
    and the copy only costs this process CPU (measured, a 512 MiB ``ctr content fetch``:
    0.35-0.44 CPU-s this way, 0.07-0.13 by sendfile, the fetch's time unchanged)."""
    loop = asyncio.get_running_loop()
    sent = 0
    held = 0  # pieces in a row that found the client's window full
    ahead = loop.run_in_executor(None, read, fd, start, min(_PIECE, count))
    try:
        while True:
            piece = await ahead
            if not piece:
                return sent  # the file is shorter than it was said to be
            if sock is not None:
                held = held + 1 if _unsent(sock) >= _PIECE else 0
                if held >= _BEHIND:
                    return sent  # this piece is read again by the caller's sendfile
            sent += len(piece)
            if sent < count:
                ahead = loop.run_in_executor(None, read, fd, start + sent,
                                             min(_PIECE, count - sent))
            await response.write(piece)
            if sent >= count:
                return sent
    finally:
        # A client gone mid-send: the read ahead ends before the caller closes the file.
        if not ahead.done():
            with contextlib.suppress(OSError):
                await asyncio.shield(ahead)
        elif not ahead.cancelled():
            ahead.exception()  # retrieved: the caller's failure is the one to report

