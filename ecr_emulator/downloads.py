"""Presigned layer URLs, the emulator's stand-in for the S3 URLs of GetDownloadUrlForLayer.

``GET /_emulator/layers/<digest>?X-Amz-Date=…&X-Amz-Expires=…&X-Amz-Signature=…`` serves the
blob with Range support (206, Content-Range, 416) like S3. The signature is an HMAC-SHA256,
under a secret kept in the data directory, over the path, the signing time and the lifetime:
a URL whose path or parameters were edited, or whose lifetime has passed, gets S3's 403.
No Authorization header is needed or read, as with a real presigned URL.
"""

from __future__ import annotations

import asyncio
import calendar
import collections
import contextlib
import hashlib
import hmac
import ipaddress
import os
import re
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from ecr_emulator.direct_reads import PIECE, open_direct, read_direct
from ecr_emulator.state import LAYER_ROUTE, REGISTRY_LAYER_ROUTE, STATE_KEY, EmulatorState
from ecr_emulator.validation import is_sha256_digest

ROUTE = LAYER_ROUTE
MAX_EXPIRES = 7 * 24 * 3600  # S3's limit for presigned URLs
_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
# Direct reads in flight per download: one at a time leaves the disk idle between them
# (curl read 512 MiB in 0.52-0.61 s that way, 0.34-0.39 s with three, as from the page cache).
READS_AHEAD = 3


def layer_path(digest: str) -> str:
    return ROUTE.format(digest=digest)


def presign(base_url: str, secret: bytes, digest: str, *, expires: int,
            now: float | None = None, route: str = ROUTE) -> str:
    path = route.format(digest=digest)
    date = time.strftime(_DATE_FORMAT, time.gmtime(time.time() if now is None else now))
    query = urlencode({
        "X-Amz-Date": date,
        "X-Amz-Expires": str(expires),
        "X-Amz-Signature": _signature(secret, path, date, str(expires)),
    })
    return f"{base_url}{path}?{query}"


def _signature(secret: bytes, path: str, date: str, expires: str) -> str:
    message = f"GET\n{path}\n{date}\n{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def s3_error(status: int, code: str, message: str) -> web.Response:
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message></Error>")
    response = web.Response(status=status, text=body, content_type="application/xml")
    response["code"] = code  # for the request log
    return response


def _check(request: web.Request, secret: bytes) -> web.Response | None:
    """None if the URL is authentic and current, else S3's error response."""
    query = request.query
    date, expires, signature = (query.get("X-Amz-Date"), query.get("X-Amz-Expires"),
                                query.get("X-Amz-Signature"))
    if date is None or expires is None or signature is None:
        return s3_error(403, "AccessDenied", "Query-string authentication requires the "
                         "X-Amz-Date, X-Amz-Expires and X-Amz-Signature parameters")
    if len(query) != 3:  # S3 signs every parameter: one added (or repeated) breaks it
        return s3_error(403, "SignatureDoesNotMatch", "The request signature we calculated "
                         "does not match the signature you provided")
    expected = _signature(secret, request.path, date, expires)
    if not hmac.compare_digest(expected, signature):
        return s3_error(403, "SignatureDoesNotMatch", "The request signature we calculated "
                         "does not match the signature you provided")
    try:
        signed_at = calendar.timegm(time.strptime(date, _DATE_FORMAT))
        lifetime = int(expires)
    except ValueError:
        return s3_error(403, "AccessDenied", "X-Amz-Date or X-Amz-Expires is malformed")
    if not 0 < lifetime <= MAX_EXPIRES or time.time() > signed_at + lifetime:
        return s3_error(403, "AccessDenied", "Request has expired")
    return None


async def serve_layer(request: web.Request) -> web.StreamResponse:
    return await serve_blob(request, request.app[STATE_KEY])


async def serve_blob(request: web.Request, state: EmulatorState) -> web.StreamResponse:
    """A presigned download of one of ``state``'s blobs (the route has a ``digest``)."""
    digest = request.match_info["digest"]
    denied = _check(request, state.secret)
    if denied is not None:
        return denied
    path = state.blobs.blob_path(digest) if is_sha256_digest(digest) else None
    if path is None or not path.is_file():
        return s3_error(404, "NoSuchKey", "The specified key does not exist.")
    # FileResponse answers Range (206/416) itself, but for a suffix of no bytes, which
    # selects nothing (RFC 9110 14.1.1) and which it reads as the whole file.
    if _ZERO_SUFFIX.fullmatch(request.headers.get("Range", "")):
        response = s3_error(416, "InvalidRange", "The requested range is not satisfiable")
        response.headers["Content-Range"] = f"bytes */{path.stat().st_size}"
        return response
    return _LayerFile(path, headers={"Content-Type": "application/octet-stream"})


_ZERO_SUFFIX = re.compile(r"[ \t]*bytes[ \t]*=[ \t]*-0+[ \t]*", re.ASCII | re.IGNORECASE)


class _LayerFile(web.FileResponse):
    """A layer file, sent with sendfile to clients on other hosts and in 1 MiB reads to a
    client on this host (the embedded gateway, a node's client following a redirect): those
    bytes reach the client still in the CPU's cache, where sendfile hands it page-cache pages
    it then reads from memory (256 MiB over loopback: a hashing client 0.31-0.35 s by
    sendfile, 0.24-0.28 s in reads; curl 0.15-0.17 s and 0.11-0.13 s). The reads go past
    the page cache (direct_reads.py), a few of them ahead of the client."""

    def __init__(self, path: Path, headers: dict[str, str]) -> None:
        super().__init__(path, chunk_size=PIECE, headers=headers)

    async def _sendfile(self, request: web.BaseRequest, fobj: IO[Any], offset: int,
                        count: int) -> AbstractStreamWriter:
        if request.transport is None or not _on_this_host(request.transport):
            return await super()._sendfile(request, fobj, offset, count)
        writer = await web.StreamResponse.prepare(self, request)
        assert writer is not None  # prepared just now
        # The open file's own inode, even if the layer was deleted since it was opened.
        direct = open_direct(f"/proc/self/fd/{fobj.fileno()}")
        if direct is None:
            return await self._sendfile_fallback(writer, fobj, offset, count)
        try:
            if await _send_direct(writer, direct, offset, count) < count:
                request.transport.abort()  # the file is shorter than it was: a broken body
        finally:
            os.close(direct)
        return writer


async def _send_direct(writer: AbstractStreamWriter, fd: int, offset: int, count: int) -> int:
    """``count`` bytes of ``fd`` from ``offset`` in direct reads, up to READS_AHEAD of them
    in worker threads while the client is sent the one before; the bytes sent (fewer where
    the file is shorter)."""
    loop = asyncio.get_running_loop()
    reads: collections.deque[asyncio.Future[bytes]] = collections.deque()
    asked = sent = 0

    def read_ahead() -> None:
        nonlocal asked
        while len(reads) < READS_AHEAD and asked < count:
            size = min(PIECE, count - asked)
            reads.append(loop.run_in_executor(None, read_direct, fd, offset + asked, size))
            asked += size

    read_ahead()
    try:
        while reads:
            piece = await reads.popleft()
            if not piece:
                return sent
            sent += len(piece)
            read_ahead()
            await writer.write(piece)
        return sent
    finally:
        # A client gone mid-send: the reads ahead end before the caller closes the file.
        for read in reads:
            if not read.done():
                with contextlib.suppress(OSError):
                    await asyncio.shield(read)
            elif not read.cancelled():
                read.exception()  # retrieved: the caller's failure is the one to report


def _on_this_host(transport: asyncio.BaseTransport) -> bool:
    peer = transport.get_extra_info("peername")
    if not isinstance(peer, tuple) or not peer:
        return True  # a Unix socket
    try:
        return ipaddress.ip_address(str(peer[0]).partition("%")[0]).is_loopback
    except ValueError:
        return False


async def log_download(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: log downloads once their status is final."""
    if not request.path.startswith((ROUTE.partition("{")[0],
                                    REGISTRY_LAYER_ROUTE.partition("{")[0])):
        return
    outcome = "InvalidRange" if response.status == 416 else response.get("code", "ok")
    request.app[STATE_KEY].request_log.record({
        "ts": time.time(), "action": "LayerDownload", "repository": None, "outcome": outcome,
        "status": response.status, "access_key_id": None, "region": None,
        "digest": request.match_info.get("digest"), "range": request.headers.get("Range"),
    })
