"""Content-Range of upload chunks and Range of blob reads."""

from __future__ import annotations

import re

from gateway.oci.errors import BLOB_UPLOAD_INVALID, RANGE_INVALID, OciError

# Upload chunks carry "<start>-<end>" (inclusive); some clients prefix "bytes ".
_CHUNK = re.compile(r"^(?:bytes[ =])?(\d{1,19})-(\d{1,19})$")
_READ = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")


def parse_content_range(value: str) -> tuple[int, int]:
    match = _CHUNK.match(value.strip())
    if not match:
        raise OciError(RANGE_INVALID, {"Content-Range": value[:100]},
                       message="malformed Content-Range")
    start, end = int(match[1]), int(match[2])
    if end < start:
        raise OciError(RANGE_INVALID, {"Content-Range": value[:100]},
                       message="Content-Range ends before it starts")
    return start, end


def parse_content_length(value: str | None) -> int | None:
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise OciError(BLOB_UPLOAD_INVALID, {"Content-Length": value[:100]},
                       message="malformed Content-Length")
    return int(value)


def upload_range_header(received: int) -> str:
    """The Range a registry reports for an upload: inclusive, "0-0" when nothing arrived."""
    return f"0-{max(received - 1, 0)}"


def parse_read_range(value: str, size: int) -> tuple[int, int] | None:
    """A single byte range of a blob read as (start, end inclusive); None means whole blob.

    Raises 416 for a range outside the blob. Multi-range requests are served whole, which
    RFC 9110 permits.
    """
    match = _READ.match(value.strip())
    if not match:
        return None
    first, last = match[1], match[2]
    if first == "" and last == "":
        return None
    if first == "":  # suffix range: the last N bytes
        length = int(last)
        if length == 0 or size == 0:  # nothing to take the last bytes of
            raise _unsatisfiable(size)
        return max(size - length, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise _unsatisfiable(size)
    return start, end


_FILE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$", re.ASCII | re.IGNORECASE)


def parse_file_range(value: str | None, size: int) -> tuple[int, int] | None:
    """The Range of a read served from a local file. aiohttp's file responses serve one
    ``bytes=`` range and refuse anything else with a bare 416, so every refusal is made here
    instead, with its OCI body and Content-Range. None: no Range, the whole file."""
    if value is None:
        return None
    match = _FILE_RANGE.match(value)
    # More than 19 digits: beyond any blob (and past what aiohttp's int() parsing accepts).
    if not match or not (match[1] or match[2]) or max(len(match[1]), len(match[2])) > 19:
        raise _unsatisfiable(size)
    first, last = match[1], match[2]
    if not first:  # suffix range: the last N bytes
        length = int(last)
        if length == 0 or size == 0:  # nothing to take the last bytes of
            raise _unsatisfiable(size)
        return max(size - length, 0), size - 1
    start = int(first)
    if start >= size or (last and int(last) < start):
        raise _unsatisfiable(size)
    return start, min(int(last), size - 1) if last else size - 1


def _unsatisfiable(size: int) -> OciError:
    return OciError(RANGE_INVALID, {"size": size}, headers={"Content-Range": f"bytes */{size}"})
