"""Content discovery: tags list and catalog with the spec's `n`/`last` paging; referrers a page
at a time, each page's `Link` naming the next."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from urllib.parse import urlencode

import orjson
from aiohttp import web

from gateway.observability.metrics import REFERRERS_REFUSALS
from gateway.oci.backend import ReferrersPage
from gateway.oci.context import CATALOG_FILTER, registry, request_context, settings
from gateway.oci.digests import parse_digest
from gateway.oci.errors import PAGINATION_INVALID, OciError
from gateway.oci.mediatypes import OCI_INDEX
from gateway.oci.middleware import stamp
from gateway.oci.sending import SendWatch

_PIECE = 256 * 1024  # written at a time: what the loop copies before another client's turn


def _page(request: web.Request, items: list[str], path: str,
          visible: Callable[[str], bool] | None = None) -> tuple[list[str], dict[str, str]]:
    """Apply `last` and `n` to a lexically sorted list; add a Link header when more remain.
    Only items ``visible`` keeps are shown, tested from `last` on until the page is full, so
    a page of a long list costs a bisect and about `n` tests, not a pass over the list."""
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
    if visible is not None:
        page, more = _visible_page(items, start, n, visible)
    elif n is None:
        return items[start:], {}
    else:
        page, more = items[start:start + n], start + n < len(items)
    headers = {}
    if page and more and n is not None:
        query = urlencode({"n": n, "last": page[-1]})
        headers["Link"] = f'<{path}?{query}>; rel="next"'
    return page, headers


def _visible_page(items: list[str], start: int, n: int | None,
                  visible: Callable[[str], bool]) -> tuple[list[str], bool]:
    """Up to ``n`` visible items from ``start`` on, and whether another visible one follows."""
    page: list[str] = []
    for index in range(start, len(items)):
        if visible(items[index]):
            if n is not None and len(page) >= n:
                return page, True
            page.append(items[index])
    return page, False


async def list_tags(request: web.Request, name: str) -> web.StreamResponse:
    tags = await registry(request).list_tags(request_context(request))  # sorted by the backend
    page, headers = _page(request, tags, f"/v2/{name}/tags/list")
    return web.json_response({"name": name, "tags": page}, headers=headers)


async def catalog(request: web.Request) -> web.StreamResponse:
    # sorted by the backend
    names = await registry(request).list_repositories(request_context(request))
    allowed = request.app.get(CATALOG_FILTER)
    visible = None if allowed is None else (lambda name: allowed(request, name))
    page, headers = _page(request, names, "/v2/_catalog", visible)
    return web.json_response({"repositories": page}, headers=headers)


async def referrers(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    parse_digest(digest)
    artifact_type = request.query.get("artifactType")
    cursor = request.query.get("next")
    page = await registry(request).referrers(request_context(request), digest, artifact_type,
                                             cursor)
    try:
        return await _send_referrers(request, name, digest, artifact_type, page)
    finally:
        page.release()


async def _send_referrers(request: web.Request, name: str, digest: str,
                          artifact_type: str | None, page: ReferrersPage) -> web.StreamResponse:
    found = page.referrers
    headers = {}
    if artifact_type is not None:
        found = [r for r in found if r.artifact_type == artifact_type]
        headers["OCI-Filters-Applied"] = "artifactType"
    if page.next is not None:  # the spec's paging of a referrers list, by the Link header
        query = {"artifactType": artifact_type} if artifact_type is not None else {}
        query["next"] = page.next
        headers["Link"] = f'</v2/{name}/referrers/{digest}?{urlencode(query)}>; rel="next"'
    # The index is written around the referrers as they were encoded when read (each may
    # carry MiBs of annotations): no copy of the page per reader, nothing encoded again.
    pieces = [_INDEX_HEAD]
    for number, referrer in enumerate(found):
        pieces += [b",", referrer.encoded] if number else [referrer.encoded]
    pieces.append(_INDEX_TAIL)
    response = web.StreamResponse(headers=headers)
    response.content_type = OCI_INDEX
    response.content_length = sum(map(len, pieces))
    stamp(response, request["request_id"])
    # The page keeps its room in limits.max_referrers_bytes until it is sent: a client that
    # does not read (a full window) would keep it, and others' reads refused, for as long as
    # it liked; one taking a byte now and then would keep it for hours within the idle
    # timeout every answer has (sending.py). So a referrers answer must be sent whole in
    # time. Its room is not given back when the bytes reach the write buffer instead: they
    # are still in this process, and the page with them until the last is written.
    async with SendWatch(request, whole=settings(request).referrers_send_timeout,
                         setting="limits.referrers_send_timeout_seconds",
                         counted=REFERRERS_REFUSALS.labels("send_timeout").inc):
        await response.prepare(request)
        await _write_pieces(response, pieces)
        await response.write_eof()
    return response


_INDEX_HEAD = orjson.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})[:-2]
_INDEX_TAIL = b"]}"


async def _write_pieces(response: web.StreamResponse, pieces: list[bytes]) -> None:
    """``pieces`` one after the other, about ``_PIECE`` bytes a write: small ones gathered,
    large ones sliced (one write copies all of it on the loop, twice)."""
    gathered = bytearray()
    for piece in pieces:
        if len(gathered) + len(piece) <= _PIECE:
            gathered += piece
            continue
        if gathered:
            await response.write(bytes(gathered))
            gathered.clear()
        view = memoryview(piece)
        for start in range(0, len(piece), _PIECE):
            if len(piece) - start < _PIECE:
                gathered += view[start:]
            else:
                await response.write(view[start:start + _PIECE])
    if gathered:
        await response.write(bytes(gathered))
