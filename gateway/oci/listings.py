"""Content discovery: tags list, catalog and referrers, with the spec's `n`/`last` paging."""

from __future__ import annotations

import bisect
import json
from urllib.parse import urlencode

from aiohttp import web

from gateway.oci.context import CATALOG_FILTER, registry, settings
from gateway.oci.digests import parse_digest
from gateway.oci.errors import PAGINATION_INVALID, OciError
from gateway.oci.mediatypes import OCI_INDEX


def _page(request: web.Request, items: list[str], path: str) -> tuple[list[str], dict[str, str]]:
    """Apply `last` and `n` to a lexically sorted list; add a Link header when more remain."""
    limit = settings(request).max_page_size
    raw_n, last = request.query.get("n"), request.query.get("last")
    n: int | None = None
    if raw_n is not None:
        if not (raw_n.isascii() and raw_n.isdigit()) or len(raw_n) > 9:
            raise OciError(PAGINATION_INVALID, {"n": raw_n[:50]})
        n = min(int(raw_n), limit)
    elif settings(request).default_page_size:
        n = settings(request).default_page_size
    start = bisect.bisect_right(items, last) if last else 0
    if n is None:
        return items[start:], {}
    page = items[start:start + n]
    headers = {}
    if page and start + n < len(items):
        query = urlencode({"n": n, "last": page[-1]})
        headers["Link"] = f'<{path}?{query}>; rel="next"'
    return page, headers


async def list_tags(request: web.Request, name: str) -> web.StreamResponse:
    tags = sorted(await registry(request).list_tags(name))
    page, headers = _page(request, tags, f"/v2/{name}/tags/list")
    return web.json_response({"name": name, "tags": page}, headers=headers)


async def catalog(request: web.Request) -> web.StreamResponse:
    names = sorted(await registry(request).list_repositories())
    visible = request.app.get(CATALOG_FILTER)
    if visible is not None:
        names = [name for name in names if visible(request, name)]
    page, headers = _page(request, names, "/v2/_catalog")
    return web.json_response({"repositories": page}, headers=headers)


async def referrers(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    parse_digest(digest)
    artifact_type = request.query.get("artifactType")
    found = await registry(request).referrers(name, digest, artifact_type)
    headers = {}
    if artifact_type is not None:
        found = [d for d in found if d.artifact_type == artifact_type]
        headers["OCI-Filters-Applied"] = "artifactType"
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": [d.to_json() for d in found]}
    return web.Response(body=json.dumps(index).encode(), content_type=OCI_INDEX,
                        headers=headers)
