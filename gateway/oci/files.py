"""Blob reads served from a local file that is already open.

aiohttp's FileResponse opens its path only when the response starts; a file removed in
between (evicted, or forgotten once an image references it) then becomes a plain-text 404.
Serving from a file opened while the blob was looked up closes that gap: an open file stays
readable after it is unlinked. The bytes go out with sendfile; one ``bytes=`` range is
served, and every refused range gets the OCI error body (see gateway/oci/ranges.py).
"""

from __future__ import annotations

import asyncio
from typing import BinaryIO

from aiohttp import web

from gateway.oci.ranges import parse_file_range


async def send_file(request: web.Request, handle: BinaryIO, size: int,
                    headers: dict[str, str]) -> web.StreamResponse:
    """Serve ``size`` bytes of ``handle`` (whole, or the Range asked for); the file is
    closed afterwards, also on failure."""
    loop = asyncio.get_running_loop()
    try:
        span = parse_file_range(request.headers.get("Range"), size)
        start, end = span if span is not None else (0, size - 1)
        count = end - start + 1
        response = web.StreamResponse(status=200 if span is None else 206, headers=headers)
        response.headers["Accept-Ranges"] = "bytes"
        if span is not None:
            response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        response.content_length = count
        writer = await response.prepare(request)
        if count > 0:
            transport = request.transport
            if writer is None or transport is None:
                raise ConnectionResetError("client went away")
            # Falls back to reads in worker threads where sendfile is unavailable.
            sent = await loop.sendfile(transport, handle, start, count)
            writer.output_size += sent  # bypassed the writer: counted for the access log
            if sent < count:
                transport.abort()  # the file is shorter than the blob: a broken transfer
                return response
        await response.write_eof()
        return response
    finally:
        loop.run_in_executor(None, handle.close)
