"""The outermost middleware: one access-log line and the request metrics per request.

The response is sent here (when the handler returned it unsent) so that the line carries
the bytes really sent and the whole duration, including the time to send the body; a file
response (sent by sendfile after the middlewares) is logged with the bytes it will send.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.observability.drain import IN_FLIGHT_REQUESTS
from gateway.observability.logs import REQUEST_ID
from gateway.observability.metrics import IN_FLIGHT, observe_request
from gateway.oci.sending import SEND_IDLE_TIMEOUT, SendWatch

log = logging.getLogger("gateway.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# A client's X-Request-Id is kept only when it looks like one (a uuid, hex, a short token):
# it is echoed in answers and spans, and ends every text log line of its request, where
# spaces, quotes or "=" in it could pass for more fields ("request_id=x user=admin").
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id_of(request: web.Request) -> str:
    """The client's X-Request-Id if it is a plain one, else a new id."""
    given = request.headers.get("X-Request-Id", "")
    return given if _CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def _route_label(request: web.Request) -> str:
    route = request.get("route")
    if route:
        return str(route)
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "other"


def _file_bytes(request: web.Request, response: web.FileResponse) -> int:
    """What a FileResponse will send (it is sent after this middleware, by sendfile)."""
    try:
        size = os.stat(response._path).st_size
        wanted = request.http_range
    except (OSError, ValueError):
        return 0
    start, stop = wanted.start, wanted.stop
    if start is None and stop is None:
        return size
    if start is not None and start < 0:  # suffix range: the last -start bytes
        return min(-start, size)
    start = start or 0
    stop = size if stop is None else min(stop, size)
    return max(stop - start, 0)


def _bytes_out(request: web.Request, response: web.StreamResponse | None) -> int:
    if response is None:
        return 0
    if isinstance(response, web.FileResponse) and not response.prepared:
        return 0 if response.status != 200 and response.status != 206 else \
            _file_bytes(request, response)
    return response.body_length


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request_id_of(request)
    request["request_id"] = request_id
    request_id_token = REQUEST_ID.set(request_id)
    started = time.monotonic()
    status = 500
    response: web.StreamResponse | None = None
    cut_after: int | None = None  # bytes sent when its answer was cut
    tracker = request.app.get(IN_FLIGHT_REQUESTS)
    if tracker is not None:
        tracker.enter()
    IN_FLIGHT.inc()
    # Answers written to a client that stops reading are cut (gateway/oci/sending.py): the
    # handler's own writes, and an answer it returned, sent here.
    watch = SendWatch(request, idle=request.app.get(SEND_IDLE_TIMEOUT))
    try:
        async with watch:
            response = await handler(request)
            status = response.status
            if tracker is not None and tracker.draining:
                response.force_close()  # shutting down: the client reconnects elsewhere
            # FileResponse.prepare() sends the file each time it is called: leave it to
            # aiohttp (only replicas are sent one: gateway/oci/peer.py).
            if not response.prepared and not isinstance(response, web.FileResponse):
                try:
                    await response.prepare(request)
                    await response.write_eof()
                except ConnectionError:
                    status = 499  # the client went away before its answer: nothing to report
        if watch.cut:
            status = 499  # its answer did not reach it whole
            cut_after = request.writer.output_size
            # Whatever the handler was making went with it; the connection is closed.
            return web.Response(status=499)
        assert response is not None  # the block ended only by the watch or with an answer
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except (asyncio.CancelledError, ConnectionError):
        status = 499  # the client went away (or shutdown cut the request short)
        raise
    finally:
        IN_FLIGHT.dec()
        if tracker is not None:
            tracker.leave()
        seconds = time.monotonic() - started
        bytes_in = int(getattr(request.content, "total_bytes", 0) or 0)
        bytes_out = _bytes_out(request, response) if cut_after is None else cut_after
        route = _route_label(request)
        observe_request(route, request.method, status, seconds, bytes_in, bytes_out)
        fields = {
            "request_id": request_id, "method": request.method,
            "path": request.rel_url.path, "ns": request.query.get("ns"),
            "route": request.get("route"), "repository": request.get("repository"),
            "status": status, "duration_ms": round(seconds * 1000, 2),
            "bytes_in": bytes_in, "bytes_out": bytes_out,
            "upstream_calls": request.get("upstream_calls", 0),
            "upstream_actions": request.get("upstream_actions", []),
            # Pull-through: "fetched" (this request filled ECR from the upstream registry),
            # "streamed", "revalidated", "stale", or the upstream's refusal.
            "pullthrough": request.get("pullthrough", []),
        }
        principal = request.get("principal")  # set by the auth layer
        subject = getattr(principal, "subject", None)
        if isinstance(subject, str):
            fields["user"] = subject
        log.info("%s", json.dumps(fields), extra={"access": fields})
        REQUEST_ID.reset(request_id_token)
