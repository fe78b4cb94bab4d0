"""Blob uploads: POST (session, monolithic, mount), PATCH (chunks), PUT (finish), GET, DELETE."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator

from aiohttp import web

from gateway.oci.backend import UploadStatus
from gateway.oci.context import MOUNT_REFUSED, check_stored_algorithm, registry, request_context
from gateway.oci.digests import parse_digest
from gateway.oci.errors import (
    BLOB_UPLOAD_UNKNOWN,
    DIGEST_INVALID,
    RANGE_INVALID,
    OciError,
    RequestRefused,
)
from gateway.oci.limits import body_chunks
from gateway.oci.names import check_name
from gateway.oci.ranges import parse_content_length, parse_content_range, upload_range_header

_UPLOAD_ID = re.compile(r"^[A-Za-z0-9_.=-]{1,200}$")


def _location(name: str, upload_id: str) -> str:
    return f"/v2/{name}/blobs/uploads/{upload_id}"


def _in_progress(name: str, status: UploadStatus, code: int) -> web.Response:
    return web.Response(status=code, headers={
        "Location": _location(name, status.upload_id),
        "Range": upload_range_header(status.received),
        "Docker-Upload-UUID": status.upload_id,
        "Content-Length": "0",
    })


def _created(name: str, digest: str) -> web.Response:
    return web.Response(status=201, headers={
        "Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest,
        "Content-Length": "0"})


def _check_upload_id(upload_id: str) -> None:
    if not _UPLOAD_ID.match(upload_id):
        raise OciError(BLOB_UPLOAD_UNKNOWN, {"upload": upload_id[:200]})


async def _body(request: web.Request, declared: int | None = None) -> AsyncGenerator[bytes, None]:
    """The body; with ``declared`` (its Content-Range's length), one of any other length is
    refused as a whole with 416 (aiohttp holds a body with Content-Length to its length,
    but a chunked one may run past or stop short of its Content-Range): the byte that
    overruns it is never handed on, and the upload keeps nothing of this request."""
    received = 0
    # Closed as soon as this body is done with, whoever stops reading it (limits.py).
    async with contextlib.aclosing(body_chunks(request)) as chunks:  # 408 if it stalls
        async for chunk in chunks:
            received += len(chunk)
            if declared is not None and received > declared:
                raise _mismatch(request, declared, "more")
            yield chunk
    if declared is not None and received != declared:
        raise _mismatch(request, declared, "fewer")


def _mismatch(request: web.Request, declared: int, more: str) -> RequestRefused:
    return RequestRefused(RANGE_INVALID, {"Content-Range": request.headers["Content-Range"][:100]},
                          message=f"the body holds {more} bytes than its Content-Range")


def _chunk_range(request: web.Request) -> tuple[int, int] | None:
    """The chunk's declared (start, length), after checking Content-Range against
    Content-Length."""
    length = parse_content_length(request.headers.get("Content-Length"))
    value = request.headers.get("Content-Range")
    if value is None:
        return None
    start, end = parse_content_range(value)
    if length is None and not request.body_exists:
        length = 0  # neither Content-Length nor a chunked body: nothing follows
    if length is not None and length != end - start + 1:
        raise OciError(RANGE_INVALID, {"Content-Range": value, "Content-Length": length},
                       message="Content-Range does not match Content-Length")
    return start, end - start + 1


def _length(request: web.Request, declared: int | None) -> int | None:
    """The body's length as the request says it before it is read (None: chunked, with no
    Content-Range)."""
    if declared is not None:
        return declared
    return parse_content_length(request.headers.get("Content-Length"))


def _has_body(request: web.Request) -> bool:
    length = parse_content_length(request.headers.get("Content-Length"))
    if length is not None:
        return length > 0
    return request.body_exists


async def start_upload(request: web.Request, name: str) -> web.StreamResponse:
    backend = registry(request)
    ctx = request_context(request)
    query = request.query
    mount, source = query.get("mount"), query.get("from")
    if mount is not None:
        parse_digest(mount)
        if source is not None and not request.get(MOUNT_REFUSED):
            check_name(source)
            if await backend.mount_blob(ctx, mount, source):
                return _created(name, mount)
    digest = query.get("digest")
    if digest is not None:
        parse_digest(digest)
        check_stored_algorithm(request, digest)
    status = await backend.start_upload(ctx)
    if digest is None:
        return _in_progress(name, status, 202)
    # Monolithic upload: the whole blob is this request's body.
    try:
        if _has_body(request):
            async with contextlib.aclosing(_body(request)) as body:
                await backend.write_upload(ctx, status.upload_id, body, None,
                                           length=_length(request, None))
        await backend.finish_upload(ctx, status.upload_id, digest)
    except BaseException:
        # The failure may already have closed the session: keep the original error.
        with contextlib.suppress(OciError):
            await backend.cancel_upload(ctx, status.upload_id)
        raise
    return _created(name, digest)


async def patch_upload(request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    _check_upload_id(upload_id)
    start, declared = _chunk_range(request) or (None, None)
    async with contextlib.aclosing(_body(request, declared)) as body:
        status = await registry(request).write_upload(request_context(request), upload_id,
                                                      body, start,
                                                      length=_length(request, declared))
    return _in_progress(name, status, 202)


async def put_upload(request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    _check_upload_id(upload_id)
    digest = request.query.get("digest")
    if digest is None:
        raise OciError(DIGEST_INVALID, message="digest query parameter missing")
    parse_digest(digest)
    # Before the body is read: a digest the storage cannot hold would only be refused once
    # the bytes went upstream, and the upload with them.
    check_stored_algorithm(request, digest)
    backend = registry(request)
    start, declared = _chunk_range(request) or (None, None)
    if _has_body(request):
        async with contextlib.aclosing(_body(request, declared)) as body:
            await backend.write_upload(request_context(request), upload_id, body, start,
                                       length=_length(request, declared))
    await backend.finish_upload(request_context(request), upload_id, digest)
    return _created(name, digest)


async def get_upload(request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    _check_upload_id(upload_id)
    status = await registry(request).upload_status(request_context(request), upload_id)
    return _in_progress(name, status, 204)


async def delete_upload(request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    _check_upload_id(upload_id)
    await registry(request).cancel_upload(request_context(request), upload_id)
    return web.Response(status=204)
