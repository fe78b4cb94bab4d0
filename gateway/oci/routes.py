"""The distribution-spec 1.1 endpoint table, as data, and the dispatcher that serves it.

Matching is done on the raw (still percent-encoded) path so that an encoded slash or any
other escape in a repository name is refused instead of silently decoded.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.oci import blobs, listings, manifests, uploads
from gateway.oci.context import ACCESS_CHECK, REQUEST_CONTEXT
from gateway.oci.errors import METHOD_UNKNOWN, NOT_FOUND, UNSUPPORTED, OciError
from gateway.oci.limits import client_of, upload_slot
from gateway.oci.names import check_name
from gateway.oci.request import CALLER, PULLTHROUGH_EVENTS, UPSTREAM_ACTIONS, RequestContext

Handler = Callable[..., Awaitable[web.StreamResponse]]


async def ping(request: web.Request) -> web.StreamResponse:
    return web.json_response({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})


@dataclass(frozen=True)
class Route:
    """One endpoint: path pattern, and per method the handler and the access it needs."""

    spec_id: str  # the endpoint's id in the spec's table (end-1 … end-13)
    pattern: re.Pattern[str]
    methods: dict[str, tuple[Handler, str | None]]


_NAME = r"(?P<name>[^?#]+?)"
_ROUTES = (
    Route("end-1", re.compile(r"^/v2/?$"), {"GET": (ping, None), "HEAD": (ping, None)}),
    Route("end-8b", re.compile(r"^/v2/_catalog$"), {"GET": (listings.catalog, "catalog")}),
    Route("end-4a", re.compile(rf"^/v2/{_NAME}/blobs/uploads/?$"),
          {"POST": (uploads.start_upload, "push")}),
    Route("end-5", re.compile(rf"^/v2/{_NAME}/blobs/uploads/(?P<upload_id>[^/]+)$"), {
        "GET": (uploads.get_upload, "push"),
        "PATCH": (uploads.patch_upload, "push"),
        "PUT": (uploads.put_upload, "push"),
        "DELETE": (uploads.delete_upload, "push"),
    }),
    Route("end-2", re.compile(rf"^/v2/{_NAME}/blobs/(?P<digest>[^/]+)$"), {
        "GET": (blobs.get_blob, "pull"),
        "HEAD": (blobs.head_blob, "pull"),
        "DELETE": (blobs.delete_blob, "delete"),
    }),
    Route("end-3", re.compile(rf"^/v2/{_NAME}/manifests/(?P<reference>[^/]+)$"), {
        "GET": (manifests.get_manifest, "pull"),
        "HEAD": (manifests.head_manifest, "pull"),
        "PUT": (manifests.put_manifest, "push"),
        "DELETE": (manifests.delete_manifest, "delete"),
    }),
    Route("end-8a", re.compile(rf"^/v2/{_NAME}/tags/list$"), {"GET": (listings.list_tags, "pull")}),
    Route("end-12a", re.compile(rf"^/v2/{_NAME}/referrers/(?P<digest>[^/]+)$"),
          {"GET": (listings.referrers, "pull")}),
)


def match(raw_path: str, method: str) -> tuple[Route, Handler, str | None, dict[str, Any]]:
    for route in _ROUTES:
        found = route.pattern.match(raw_path)
        if not found:
            continue
        if method not in route.methods:
            allowed = ", ".join(sorted(route.methods))
            raise OciError(METHOD_UNKNOWN, {"method": method, "allowed": allowed},
                           headers={"Allow": allowed})
        handler, action = route.methods[method]
        params = found.groupdict()
        return route, handler, action, params
    raise OciError(NOT_FOUND, {"path": raw_path[:300]})


def refuse_mirror_write(route: Route, action: str | None, request: web.Request) -> None:
    """A mirror namespace (``?ns=<upstream host>``) is read-only: a write or delete naming
    one is refused before anything else, whether or not mirrors are configured, so that no
    push can land in the repositories every mirror client pulls from."""
    if action not in ("push", "delete") or "ns" not in request.query:
        return
    reads = ", ".join(sorted(m for m, (_, a) in route.methods.items() if a == "pull"))
    raise OciError(UNSUPPORTED, {"method": request.method, "ns": request.query["ns"][:300]},
                   message="a mirror namespace (ns) is read-only: push and delete without ns",
                   headers={"Allow": reads})


async def dispatch(request: web.Request) -> web.StreamResponse:
    route, handler, action, params = match(request.rel_url.raw_path, request.method)
    request["route"] = route.spec_id
    refuse_mirror_write(route, action, request)
    name = params.get("name")
    if name is not None:
        check_name(name)
        request["repository"] = name
    source = request.query.get("from") if route.spec_id == "end-4a" else None
    if source is not None and request.query.get("mount"):
        # A mount's source is judged by the access check too: a valid name, or nothing is.
        check_name(source)
    # Everything the backend learns of this request beyond an operation's arguments.
    request[REQUEST_CONTEXT] = RequestContext(
        name or "", request.query.get("ns") or None, request.get(CALLER), route.spec_id,
        request.get(UPSTREAM_ACTIONS), request.get(PULLTHROUGH_EVENTS),
        client=client_of(request))
    check = request.app.get(ACCESS_CHECK)
    if check is not None and action is not None:
        await check(request, name, action)
    if (route.spec_id in ("end-4a", "end-5") and request.method in ("POST", "PATCH", "PUT")) \
            or (route.spec_id == "end-3" and request.method == "PUT"):
        # 429 beyond the concurrent-upload limits. A manifest PUT counts too: its body is
        # held whole while it arrives (up to max_manifest_bytes).
        async with upload_slot(request):
            return await handler(request, **params)
    return await handler(request, **params)


def add_routes(app: web.Application) -> None:
    app.router.add_route("*", "/v2", dispatch)
    # Any character, newlines included (an encoded one must reach check_name, not a 404).
    app.router.add_route("*", "/v2/{tail:[\\s\\S]*}", dispatch)
