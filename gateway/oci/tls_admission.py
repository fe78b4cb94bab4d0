"""HTTPS served by the gateway (``tls``): each connection is counted in the connection bounds
as it is accepted, before its TLS handshake.

asyncio's TLS server calls the protocol's ``connection_made`` once the handshake is done, so a
connection that never finishes it (the socket opened, nothing sent) held a descriptor that no
bound counted, for asyncio's handshake timeout of 60 s: opened again and again, from one
address, they exhausted the descriptors the bounds exist to keep (gateway/oci/connections.py).

So the server's protocol here is a plain one: it admits the connection as it is made (its
peer is known then), and hands the socket to asyncio's TLS protocol around the HTTP handler,
with ``limits.header_timeout_seconds`` to finish the handshake (the handshake is part of
sending a request's head). The admission is given back when the socket closes, whether the
handshake was done or not.

Its end is bounded too. asyncio waits for the peer's close_notify (for
``limits.header_timeout_seconds`` here, rather than its 30 s), then closes the socket once
its write buffer is sent, without a limit: a peer that asked for answers, read none and sent
its close_notify held the socket and its admission for ever. The rest of the buffer gets the
same time, then the socket is aborted; a peer that ends its stream without a close_notify
ends the connection at once.

A connection past a bound gets its refusal (429 or 503, as in plain HTTP) once its handshake
is done: a client over its share, say a CI fleet behind one address, is told why. Those
connections are counted by no bound, so at most ``MAX_REFUSING`` are answered at once; past
that one is closed before any handshake, unanswered.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from asyncio.sslproto import SSLProtocol
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp.web_protocol import RequestHandler

from gateway.oci.connections import Admitted, ConnectionBounds

MAX_REFUSING = 64
# Seconds for the handshake and for each step of the closing unless the server says
# otherwise (the gateway gives limits.header_timeout_seconds); asyncio's own is 60 s.
DEFAULT_TIMEOUT = 60.0


@dataclass
class Refusing:
    """The connections of one server being answered a refusal over TLS."""
    held: int = 0

    def leave(self) -> None:
        self.held -= 1


class TlsAdmission(asyncio.Protocol):
    """Admits one accepted connection, then serves the handler ``make_handler`` makes over
    TLS on it (or, past a bound, its refusal: no handler is made)."""

    def __init__(self, make_handler: Callable[[], RequestHandler], context: ssl.SSLContext,
                 bounds: ConnectionBounds | None, refusing: Refusing,
                 handshake_timeout: float) -> None:
        self._make_handler = make_handler
        self._context = context
        self._bounds = bounds
        self._refusing = refusing
        self._handshake_timeout = handshake_timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        served: asyncio.Protocol | None = None
        release: Callable[[], None] | None = None
        if self._bounds is not None:
            verdict = self._bounds.verdict(transport)
            if isinstance(verdict, Admitted):
                release = functools.partial(self._bounds.leave, verdict)
            elif self._refusing.held < MAX_REFUSING:
                served, release = _Refusal(verdict), self._refusing.leave
                self._refusing.held += 1
            else:
                transport.close()  # nothing of it is read
                return
        if served is None:
            served = self._make_handler()
        no_waiter: Any = None  # no one awaits the handshake: a failed one closes the socket
        timeout: Any = self._handshake_timeout  # typeshed says int; seconds, as a float
        tls = _TlsUntilClosed(asyncio.get_running_loop(), served, self._context, no_waiter,
                              server_side=True, ssl_handshake_timeout=timeout,
                              ssl_shutdown_timeout=timeout)
        tls.release = release
        tls.closing_timeout = self._handshake_timeout
        # As asyncio's start_tls does: the socket's bytes go to the TLS protocol from now on.
        transport.set_protocol(tls)
        tls.connection_made(transport)


class _Refusal(asyncio.Protocol):
    def __init__(self, answer: bytes) -> None:
        self._answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self._answer)
        transport.close()  # its request, if it sent one after the handshake, is not read


class _TlsUntilClosed(SSLProtocol):
    """asyncio's TLS protocol, calling ``release`` once its socket is closed, which it is
    within ``closing_timeout`` of the TLS session's end."""
    release: Callable[[], None] | None = None
    closing_timeout = DEFAULT_TIMEOUT
    _closing: asyncio.TimerHandle | None = None

    def _on_shutdown_complete(self, shutdown_exc: BaseException | None) -> None:
        # The session is over (close_notify both ways, or the peer's end of the stream), and
        # asyncio closes the socket once its write buffer is sent, however long that takes: a
        # peer that asked for answers, read none and sent its close_notify kept the socket,
        # its place in the bounds and the requests blocked writing to it for ever (its answers'
        # send watch takes a closing connection for gone). asyncio's own hook (3.11+): the
        # test of this in tests/integration/trust/test_connection_bounds.py fails without it.
        super()._on_shutdown_complete(shutdown_exc)  # type: ignore[misc]
        transport = self._transport
        if shutdown_exc is None and transport is not None and self._closing is None:
            assert isinstance(transport, asyncio.Transport)
            self._closing = self._loop.call_later(self.closing_timeout, transport.abort)

    def eof_received(self) -> bool | None:  # type: ignore[override]  # True at times
        app, transport = self._app_transport, self._transport
        if app is not None and not app.is_closing() and transport is not None:
            # The peer ended its stream, not the TLS session (no close_notify): asyncio would
            # drop every answer written from then on, each with a warning (5,541 lines for
            # one connection's pipelined requests). The connection ends now.
            assert isinstance(transport, asyncio.Transport)
            transport.abort()
            return None
        return super().eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._closing is not None:
            self._closing.cancel()
        try:
            super().connection_lost(exc)
        finally:
            release, self.release = self.release, None
            if release is not None:
                release()
