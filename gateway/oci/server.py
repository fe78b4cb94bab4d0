"""The HTTP server around the application: requests aiohttp's parser refuses (a broken request
line, oversized or malformed headers, a bad Content-Length) never reach a handler or a
middleware, so aiohttp answers them itself in plain text. Registry clients parse error
bodies as OCI JSON, so the connection handler here answers those in the OCI shape too, and
logs them as the client's fault: one warning line, no traceback.

aiohttp exposes no hook for this answer: ``RequestHandler.handle_error`` is the method its
server calls for it, and ``_make_server`` the method every ``BaseRunner`` subclass provides to
build its server, so both are overridden in subclasses rather than patched globally.
"""

from __future__ import annotations

import logging
import uuid

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway.oci.errors import REQUEST_INVALID, OciError
from gateway.oci.middleware import render

log = logging.getLogger("gateway.errors")


class _OciRequestHandler(RequestHandler):
    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or status >= 500:
            return super().handle_error(request, status, exc, message)
        # docker and skopeo try HTTPS first on a registry they may reach in plain HTTP: a TLS
        # handshake on this port is their expected probe, not a client fault worth a warning.
        level = logging.DEBUG if _is_tls_probe(exc) else logging.WARNING
        log.log(level, "malformed request from %s refused: %s: %s", request.remote,
                type(exc).__name__, message or exc)
        if request.writer.output_size > 0:  # an answer already started: only closing is left
            raise ConnectionError("response already started")
        error = OciError(REQUEST_INVALID, {"reason": str(message or exc)[:200]},
                         status=status)
        response = render(error, uuid.uuid4().hex)
        response.force_close()  # the parser's position in the stream is lost
        return response


def _is_tls_probe(exc: HttpProcessingError) -> bool:
    # aiohttp's C parser says so only in the message; its Python parser keeps the bytes
    return isinstance(exc, BadHttpMethod) and (
        exc.line.startswith("\x16\x03") or "HTTPS traffic" in exc.message)


class _OciServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _OciRequestHandler(self, loop=self._loop, **self._kwargs)


class OciAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer unparseable requests as OCI errors."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _OciServer  # same state, one overridden factory method
        return server

