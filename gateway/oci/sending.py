"""Answers whose client stops reading them: the connection is cut, and what the answer held
is given back.

A client may ask for a blob and then read nothing (a full receive window) or a byte now and
then. Until it does, its answer keeps whatever it holds: in proxy mode the ECR download
connection (one of the HTTP client's 100) and the megabytes read ahead on it, a cache fill
others wait for, an open cache file; in pull-through a spool file whose disk space outlives
the spool budget while a reader holds it, and ECR's copy of the blob waits for it; anywhere
the answer's bytes in the write buffer, and the request's task. :class:`SendWatch` bounds
that as nginx's ``send_timeout`` does: every answer is watched while it is written (the
access-log middleware wraps the handler and the sending of what it returned), and one whose
unsent bytes make no progress for ``limits.send_idle_timeout_seconds`` is cut. The request
is cancelled where it waits (for room in the socket, in a sendfile, for the tee's next
bytes), so every ``finally`` and ``async with`` on the way gives back what it held (the
upstream response closed, files closed, a cache fill ended, a tee reader gone), then the
connection is aborted (the client sees a broken transfer). An answer's end that is still in
the write buffer when its request is over (up to 64 KiB: closing the connection would wait
for it for ever) is watched on the same way.

Progress is the kernel's word: bytes the client acknowledged (TCP_INFO), bytes in the
socket's send queue and in the transport's buffer. A connection with nothing unsent is the
gateway's to wait on (storage, the request's body), never cut for that. The same watch with
a whole-answer deadline bounds referrers answers (listings.py), which hold a shared budget.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import socket
import struct
import sys
from collections.abc import Callable
from types import TracebackType

from aiohttp import web

from gateway.observability.logs import Sparing, unsaid
from gateway.observability.metrics import SEND_CUTS

log = logging.getLogger(__name__)

# limits.send_idle_timeout_seconds, set by the application (absent: answers not watched).
SEND_IDLE_TIMEOUT = web.AppKey("send_idle_timeout", float)

_SIOCOUTQ = 0x5411  # Linux: bytes in a socket's send queue, sent or not, not acknowledged
_BYTES_ACKED = 120  # offset of tcpi_bytes_acked (u64) in Linux's struct tcp_info (4.1+)
_SAID = Sparing()  # a warning once a minute per setting (the metric counts every cut)


class SendWatch:
    """``async with SendWatch(request, idle=..., whole=...)`` around writing an answer: the
    request is cancelled and its connection cut when its unsent bytes make no progress for
    ``idle`` seconds, or (``whole``) when the block has not ended within that many. A cut
    is not raised: the block ends, :attr:`cut` says so. ``setting`` names the limit in the
    warning, ``counted`` is called once per cut beside the metric."""

    def __init__(self, request: web.Request, *, idle: float | None = None,
                 whole: float | None = None, setting: str = "limits.send_idle_timeout_seconds",
                 counted: Callable[[], None] | None = None) -> None:
        self._request: web.Request | None = request  # let go of once the block is over
        self._transport = request.transport
        self._method = request.method
        self._route = "other"
        self._idle = idle or 0.0  # 0: progress not watched
        self._whole = whole
        self._setting = setting
        self._counted = counted
        self._deadline = asyncio.timeout(whole)
        self._check: asyncio.TimerHandle | None = None
        self._seen: tuple[int, ...] = ()
        self._still_since = 0.0
        self._after = False  # the block is over, its last bytes still in the write buffer
        self.cut = False

    async def __aenter__(self) -> SendWatch:
        await self._deadline.__aenter__()
        if self._idle and self._transport is not None:
            loop = asyncio.get_running_loop()
            self._still_since = loop.time()
            self._check = loop.call_later(self._idle / 4, self._look)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        trace: TracebackType | None) -> bool:
        if self._check is not None:
            self._check.cancel()
        try:
            await self._deadline.__aexit__(kind, exc, trace)
        except TimeoutError:
            if not self._deadline.expired():
                raise
            self._cut_off("idle" if self.cut else "whole")
            return True  # the request's cancellation ends here: the block is over
        transport = self._transport
        if self._check is not None and transport is not None and _buffered(transport) > 0:
            # The answer's end (up to the buffer's high-water mark, 64 KiB) waits for the
            # client after the request: watched on, the connection cut if it does not move.
            # The request and its task are let go of: what they hold (the answer, a 4 MiB
            # manifest) must not live on for as long as its last bytes are watched.
            self._route = self._route_of()
            self._request = None
            self._deadline = asyncio.timeout(None)  # the entered one holds the done task
            self._after = True
            self._check = asyncio.get_running_loop().call_later(self._idle / 4, self._look)
        return False

    def _look(self) -> None:
        """Every quarter of ``idle``: has anything unsent moved since the last look?"""
        loop = asyncio.get_running_loop()
        transport = self._transport
        if transport is None or (transport.is_closing() and not self._after):
            return  # the client went away: its writes fail on their own
        state = _progress(transport)
        if self._after and not state[2]:
            return  # the rest is the kernel's: the connection closes when it idles
        now = loop.time()
        if state != self._seen or not _unsent(state):
            self._seen, self._still_since = state, now
        elif now - self._still_since >= self._idle:
            self.cut = True
            if self._after:
                self._cut_off("idle")  # nothing left to cancel
            else:
                self._deadline.reschedule(now)  # cancels the request where it waits
            return
        self._check = loop.call_later(self._idle / 4, self._look)

    def _route_of(self) -> str:
        """The route table's id of the request (never its path)."""
        if self._request is None:
            return self._route
        return str(self._request.get("route") or "other")

    def _cut_off(self, timeout: str) -> None:
        route = self._route_of()
        SEND_CUTS.labels(route, timeout).inc()
        if self._counted is not None:
            self._counted()
        seconds = self._idle if timeout == "idle" else self._whole
        left_out = _SAID.due(self._setting)
        if left_out is not None:
            manner = "made no progress" if timeout == "idle" else "was not read"
            log.warning("an answer to %s %s %s within %s %g: connection closed%s",
                        self._method, route, manner, self._setting, seconds, unsaid(left_out))
        if self._transport is not None:
            self._transport.abort()  # what was buffered for it goes; it sees a broken transfer


def _progress(transport: asyncio.Transport) -> tuple[int, ...]:
    """(bytes acknowledged by the client, bytes in the socket's send queue, bytes in the
    transport's buffer): what changes while a client reads, and stays while it does not.
    Without TCP_INFO (a Unix socket, another kernel) the first is 0."""
    buffered = _buffered(transport)
    if buffered < 0:
        return (0, 0, 0)  # a TLS connection that is over
    sock = transport.get_extra_info("socket")
    if sock is None:
        return (0, 0, buffered)
    acked = queued = 0
    try:
        queued = int.from_bytes(fcntl.ioctl(sock.fileno(), _SIOCOUTQ, bytes(4)),
                                sys.byteorder, signed=True)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
            if len(info) >= _BYTES_ACKED + 8:
                acked = struct.unpack_from("Q", info, _BYTES_ACKED)[0]
    except OSError:
        pass
    return (acked, queued, buffered)


def _buffered(transport: asyncio.Transport) -> int:
    """The bytes in the transport's buffer; -1 for asyncio's TLS transport closed twice (as
    it is once its peer's close_notify came): it has forgotten its connection and fails every
    question asked of it, and its closing is bounded on its own (gateway/oci/tls_admission.py)."""
    try:
        return transport.get_write_buffer_size()
    except AttributeError:
        return -1


def _unsent(state: tuple[int, ...]) -> bool:
    """Whether bytes wait for the client (in the socket's queue or the transport's buffer)."""
    return state[1] > 0 or state[2] > 0
