"""Cross-cutting request handling: OCI error bodies, request ids and one access-log line."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.oci.errors import OciError

log = logging.getLogger("gateway.access")
errors_log = logging.getLogger("gateway.errors")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_INTERNAL = {"errors": [{"code": "UNKNOWN", "message": "internal error", "detail": {}}]}


def render(error: OciError, request_id: str) -> web.Response:
    headers = {"Docker-Distribution-API-Version": "registry/2.0", "X-Request-Id": request_id}
    headers.update(error.headers)
    body = b"" if error.status in (304,) else json.dumps(error.body()).encode()
    return web.Response(status=error.status, body=body, headers=headers,
                        content_type="application/json")


@web.middleware
async def oci_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex
    request["request_id"] = request_id
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:
            response.headers.setdefault("Docker-Distribution-API-Version", "registry/2.0")
            response.headers["X-Request-Id"] = request_id
        return response
    except OciError as error:
        status = error.status
        return render(error, request_id)
    except web.HTTPException as exc:
        status = exc.status
        raise
    except Exception:
        errors_log.exception("unhandled error on %s %s", request.method, request.rel_url.path)
        status = 500
        return web.Response(status=500, body=json.dumps(_INTERNAL).encode(),
                            content_type="application/json",
                            headers={"X-Request-Id": request_id})
    finally:
        log.info("%s", json.dumps({
            "request_id": request_id, "method": request.method,
            "path": request.rel_url.path, "ns": request.query.get("ns"),
            "route": request.get("route"), "repository": request.get("repository"),
            "status": status, "duration_ms": round((time.monotonic() - started) * 1000, 2),
            "upstream_calls": request.get("upstream_calls", 0),
        }))
