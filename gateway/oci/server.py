"""The HTTP server around the application: requests aiohttp's parser refuses (a broken request
line, oversized or malformed headers, a bad Content-Length) never reach a handler or a
middleware, so aiohttp answers them itself in plain text. Registry clients parse error
bodies as OCI JSON, so the connection handler here answers those in the OCI shape too, and
logs them as the client's fault: one warning line, no traceback.

A body whose framing breaks after its head (a chunk size that is not hex, in a later packet)
fails the handler reading it at once, with the parser's error: aiohttp's C parser drops such
a body's reader without telling it, so the handler would wait for bytes that never come.

A connection past the server's bounds (gateway/oci/connections.py) is answered and closed as
it is made, before its handler starts.

aiohttp exposes no hook for any of these: ``RequestHandler.connection_made``,
``handle_error`` and ``data_received`` are the methods its server calls, and
``_make_server`` the method every ``BaseRunner`` subclass provides to build its server, so
they are overridden in subclasses rather than patched globally.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import ssl
import uuid
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError, _ErrInfo
from aiohttp.web_request import BaseRequest

from gateway.oci.connections import Admitted, ConnectionBounds
from gateway.oci.errors import REQUEST_INVALID, OciError
from gateway.oci.middleware import render
from gateway.oci.tls_admission import DEFAULT_TIMEOUT, Refusing, TlsAdmission

log = logging.getLogger("gateway.errors")


class _OciRequestHandler(RequestHandler):
    counted = False  # in the bounds already (gateway/oci/tls_admission.py)
    _bounds: ConnectionBounds | None = None
    _admitted: Admitted | None = None
    _refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._bounds = None if self.counted else getattr(self._manager, "bounds", None)
        if self._bounds is not None:
            self._admitted = self._bounds.admit(transport)
            if self._admitted is None:  # answered and closed: nothing of it is read
                self._refused = True
                return
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        if self._bounds is not None and self._admitted is not None:
            self._bounds.leave(self._admitted)
            self._admitted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) == queued or not isinstance(self._messages[-1][0], _ErrInfo):
            return
        # The parser refused these bytes. A body it was reading ends here, with its error:
        # the Python parser does so, the C parser leaves the body's reader waiting.
        refusal = self._messages[-1][0].exc
        for payload in self._open_bodies():
            payload.set_exception(RequestPayloadError(str(refusal)), refusal)

    def _open_bodies(self) -> list[StreamReader]:
        bodies = [payload for _, payload in self._messages]
        if self._current_request is not None:
            bodies.append(self._current_request.content)
        return [body for body in bodies if not body.is_eof() and body.exception() is None]

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or status >= 500:
            return super().handle_error(request, status, exc, message)
        # docker and skopeo try HTTPS first on a registry they may reach in plain HTTP: a TLS
        # handshake on this port is their expected probe, not a client fault worth a warning.
        level = logging.DEBUG if _is_tls_probe(exc) else logging.WARNING
        reason = _without_quoted_bytes(str(message or exc))
        log.log(level, "malformed request from %s refused: %s: %s", request.remote,
                type(exc).__name__, reason)
        if request.writer.output_size > 0:  # an answer already started: only closing is left
            raise ConnectionError("response already started")
        error = OciError(REQUEST_INVALID, {"reason": reason[:200]}, status=status)
        response = render(error, uuid.uuid4().hex)
        response.force_close()  # the parser's position in the stream is lost
        return response


# The parser quotes the bytes it refused (b'...', bytearray(b'...'), '...'), on lines of
# their own with a caret under the fault, or after "when reading:" or "Bad status line".
_QUOTED = re.compile(r"""(?::\s*)?(?:(?<=[\s:])|^)(?:bytearray\()?b?['"].*""")


def _without_quoted_bytes(message: str) -> str:
    """The parser's reason, on one line, without the request bytes it quotes: those can be a
    credential (an overlong Authorization or X-Amz-Security-Token value is quoted without its
    header's name, which log redaction needs), and the answer would echo them to whatever
    stands between the client and the gateway."""
    kept = []
    for line in message.splitlines():
        line = _QUOTED.sub("", line).strip().rstrip(":").strip()
        if line and line != "^":
            kept.append(line)
    return ": ".join(kept) or "unparseable request"


def _is_tls_probe(exc: HttpProcessingError) -> bool:
    # aiohttp's C parser says so only in the message; its Python parser keeps the bytes
    return isinstance(exc, BadHttpMethod) and (
        exc.line.startswith("\x16\x03") or "HTTPS traffic" in exc.message)


class _OciServer(web.Server):
    bounds: ConnectionBounds | None = None
    tls: ssl.SSLContext | None = None
    handshake_timeout = DEFAULT_TIMEOUT
    refusing: Refusing

    def __call__(self) -> RequestHandler:
        if self.tls is None:
            return self._handler()
        # Counted before its handshake, by the protocol that then serves TLS around it (and
        # makes the handler only for a connection it admits).
        return TlsAdmission(functools.partial(self._handler, counted=True),  # type: ignore[return-value]
                            self.tls, self.bounds, self.refusing,
                            self.handshake_timeout)  # any protocol does

    def _handler(self, *, counted: bool = False) -> RequestHandler:
        handler = _OciRequestHandler(self, loop=self._loop, **self._kwargs)
        handler.counted = counted
        return handler


class OciAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer unparseable requests as OCI errors, and
    whose server holds at most what ``bounds`` lets it (gateway/oci/connections.py). With
    ``tls`` its connections are served over TLS, each counted before its handshake, which
    must be done within ``handshake_timeout`` seconds, as each step of its closing
    (gateway/oci/tls_admission.py): give its sites no ``ssl_context`` of their own."""

    def __init__(self, app: web.Application, *, bounds: ConnectionBounds | None = None,
                 tls: ssl.SSLContext | None = None,
                 handshake_timeout: float = DEFAULT_TIMEOUT,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._bounds = bounds
        self._tls = tls
        self._handshake_timeout = handshake_timeout

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _OciServer  # same state, one overridden factory method
        assert isinstance(server, _OciServer)
        server.bounds = self._bounds
        server.tls = self._tls
        server.handshake_timeout = self._handshake_timeout
        server.refusing = Refusing()
        return server

