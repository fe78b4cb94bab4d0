"""Cross-cutting request handling: OCI error bodies and request ids (the access-log line is
written by gateway.observability.access, the outermost middleware)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.observability.access import request_id_of
from gateway.oci.errors import (
    METHOD_UNKNOWN,
    NOT_FOUND,
    REQUEST_INVALID,
    TOO_LARGE,
    OciError,
    disk_full,
    is_disk_full,
    malformed_body,
)

errors_log = logging.getLogger("gateway.errors")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_REFUSALS = {404: NOT_FOUND, 405: METHOD_UNKNOWN, 413: TOO_LARGE}
_INTERNAL = {"errors": [{"code": "UNKNOWN", "message": "internal error", "detail": {}}]}


def render(error: OciError, request_id: str) -> web.Response:
    headers = {"Docker-Distribution-API-Version": "registry/2.0", "X-Request-Id": request_id}
    headers.update(error.headers)
    body = b"" if error.status in (304,) else json.dumps(error.body()).encode()
    return web.Response(status=error.status, body=body, headers=headers,
                        content_type="application/json")


def stamp(response: web.StreamResponse, request_id: str) -> None:
    """The headers every answer carries; one a handler streams gets them before it starts."""
    response.headers.setdefault("Docker-Distribution-API-Version", "registry/2.0")
    response.headers["X-Request-Id"] = request_id


@web.middleware
async def oci_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The access-log middleware (gateway.observability.access) outside this one names the
    # request and writes its log line.
    request_id = request.get("request_id") or request_id_of(request)
    request["request_id"] = request_id
    response = await _answer(request, handler, request_id)
    if request.content.exception() is not None:
        # The body broke while it was read: nothing of it is left to drain (aiohttp would
        # read it on after the answer, trip on the same fault and log it as a crash), and
        # the connection's framing is lost.
        request.content.feed_eof()
        if not response.prepared:
            response.force_close()
    return response


async def _answer(request: web.Request, handler: Handler,
                  request_id: str) -> web.StreamResponse:
    try:
        response = await handler(request)
        if not response.prepared:
            stamp(response, request_id)
        return response
    except OciError as error:
        return render(error, request_id)
    except web.RequestPayloadError as exc:  # read by aiohttp itself (a form, say)
        return render(malformed_body(exc), request_id)
    except web.HTTPException as exc:
        # aiohttp's router refuses paths outside every route (/v3, /v2x) itself; the answer
        # still takes the OCI shape clients parse.
        if exc.status < 400:
            raise
        code = _HTTP_REFUSALS.get(exc.status, REQUEST_INVALID)
        return render(OciError(code, {"path": request.rel_url.path[:300]}, message=exc.reason,
                               status=exc.status), request_id)
    except ConnectionError as exc:
        # The client vanished mid-request (a reset while its answer waited for room comes as
        # a plain ConnectionError); nobody reads the answer and nothing half-done was kept
        # (uploads record only acknowledged bytes), so this is not an error of ours.
        if not isinstance(exc, ConnectionResetError) and not _client_gone(request):
            return _unhandled(request, exc, request_id)
        errors_log.info("client went away during %s %s", request.method,
                        request.rel_url.path)
        return web.Response(status=400, headers={"X-Request-Id": request_id})
    except Exception as exc:
        return _unhandled(request, exc, request_id)


def _client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _unhandled(request: web.Request, exc: Exception, request_id: str) -> web.Response:
    """An error of the gateway's (called where it was caught: the traceback is logged)."""
    if isinstance(exc, OSError) and is_disk_full(exc):
        # Wherever on the way (session store, staging, a cache), a full disk is a
        # condition of this server, not a bug: one line, and an answer clients retry.
        errors_log.warning("disk full on %s %s: %s", request.method,
                           request.rel_url.path, exc.strerror or exc)
        return render(disk_full(exc), request_id)
    errors_log.exception("unhandled error on %s %s", request.method, request.rel_url.path)
    return web.Response(status=500, body=json.dumps(_INTERNAL).encode(),
                        content_type="application/json",
                        headers={"X-Request-Id": request_id})
