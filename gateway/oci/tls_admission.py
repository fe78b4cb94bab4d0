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
handshake was done or not. A connection past a bound is closed before the handshake: a
refusal in plain HTTP is noise to a TLS client, and the handshake is the work refusing saves.
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio.sslproto import SSLProtocol
from typing import Any

from aiohttp.web_protocol import RequestHandler

from gateway.oci.connections import Admitted, ConnectionBounds


class TlsAdmission(asyncio.Protocol):
    """Admits one accepted connection, then serves ``handler`` over TLS on it."""

    def __init__(self, handler: RequestHandler, context: ssl.SSLContext,
                 bounds: ConnectionBounds | None, handshake_timeout: float) -> None:
        self._handler = handler
        self._context = context
        self._bounds = bounds
        self._handshake_timeout = handshake_timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        admitted = None
        if self._bounds is not None:
            admitted = self._bounds.admit(transport, answer=False)
            if admitted is None:  # closed: nothing of it is read
                return
        assert isinstance(transport, asyncio.Transport)
        no_waiter: Any = None  # no one awaits the handshake: a failed one closes the socket
        timeout: Any = self._handshake_timeout  # typeshed says int; seconds, as a float
        tls = _AdmittedTls(asyncio.get_running_loop(), self._handler, self._context, no_waiter,
                           server_side=True, ssl_handshake_timeout=timeout)
        tls.bounds, tls.admitted = self._bounds, admitted
        # As asyncio's start_tls does: the socket's bytes go to the TLS protocol from now on.
        transport.set_protocol(tls)
        tls.connection_made(transport)


class _AdmittedTls(SSLProtocol):
    bounds: ConnectionBounds | None = None
    admitted: Admitted | None = None

    def connection_lost(self, exc: BaseException | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            if self.bounds is not None and self.admitted is not None:
                self.bounds.leave(self.admitted)
                self.admitted = None
