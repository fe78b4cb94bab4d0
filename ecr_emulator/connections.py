"""Bounds on the connections one emulator process serves.

Each connection costs a file descriptor, its request head as it arrives (aiohttp's defaults
allow 128 fields of 8 KiB: a head that never ends held about 1.9 MiB of memory), and up to
``body_budget.FREE_BYTES`` of body before its signature is checked; anyone who can reach
the port may open them, with any key or none. So a request head must be complete within
``Settings.header_timeout`` seconds (the same timer closes connections idle that long
between requests), has at most ``MAX_HEADERS`` fields of ``MAX_FIELD_BYTES``, and past
``Settings.max_connections`` open connections a new one gets 503 and is closed before
anything of it is read, as AWS answers a moment it has no capacity for (botocore retries
it): memory stays bounded and file descriptors are left for the data the emulator opens.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

# An AWS SDK call has about a dozen fields, none near this long (a session token is ~1 KiB).
MAX_HEADERS = 32
MAX_FIELD_BYTES = 8190
_BUSY_BODY = b'{"__type":"ServiceUnavailableException","message":"too many connections"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/x-amz-json-1.1\r\n"
         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


def server_options(header_timeout: float) -> dict[str, Any]:
    """aiohttp server arguments: header sizes (400 beyond) and how long a connection may take
    to send a request head or stay idle (aiohttp's keep-alive timer runs from the moment a
    connection opens and after each answer, and closes it if no full head came)."""
    return {"max_line_size": MAX_FIELD_BYTES, "max_field_size": MAX_FIELD_BYTES,
            "max_headers": MAX_HEADERS, "keepalive_timeout": header_timeout}


class BoundedAppRunner(web.AppRunner):
    """``web.AppRunner`` whose server turns away connections past ``max_connections``."""

    def __init__(self, app: web.Application, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._max_connections = max_connections

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _BoundedServer  # same state, one overridden factory method
        server.max_connections = self._max_connections  # type: ignore[attr-defined]
        return server


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY)
        transport.close()


class _BoundedServer(web.Server):
    max_connections: int

    def __call__(self) -> RequestHandler:
        if self.max_connections and len(self._connections) >= self.max_connections:
            return _Refused()  # type: ignore[return-value]  # any protocol does for the loop
        return super().__call__()
