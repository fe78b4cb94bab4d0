"""Content-Range of upload chunks and Range of blob reads."""

from __future__ import annotations

import re

from gateway.oci.errors import BLOB_UPLOAD_INVALID, RANGE_INVALID, OciError

# Upload chunks carry "<start>-<end>" (inclusive); some clients prefix "bytes ". ASCII digits
# only: \d and int() also take the digits of other scripts.
_CHUNK = re.compile(r"(?:bytes[ =])?(\d{1,19})-(\d{1,19})", re.ASCII)


def parse_content_range(value: str) -> tuple[int, int]:
    match = _CHUNK.fullmatch(value.strip())
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


class _Malformed(ValueError):
    """A ``bytes`` Range whose one range-spec is not one."""


def _byte_range(value: str | None) -> tuple[str, str] | None:
    """The one byte range a Range header asks for, as its two positions (strings of digits,
    either may be empty). None: the whole blob, for no header, a unit other than ``bytes``
    or more than one range: RFC 9110 (14.2) lets a server ignore a Range it does not
    support, and requires it to ignore a unit it does not know. Units are case-insensitive
    and the range list may carry optional whitespace (``bytes= 0-1``)."""
    if value is None:
        return None
    unit, equals, ranges = value.partition("=")
    if not equals or unit.strip(" \t").lower() != "bytes":
        return None
    specs = [spec for spec in (part.strip(" \t") for part in ranges.split(",")) if spec]
    if len(specs) > 1:
        return None  # several ranges: the whole blob
    match = _SPEC.fullmatch(specs[0]) if specs else None
    if not match or not (match[1] or match[2]):
        raise _Malformed(value)
    return match[1], match[2]


_SPEC = re.compile(r"(\d*)-(\d*)", re.ASCII)
# A range no blob satisfies: the storage's 416 carries the blob's size (Content-Range).
_NEVER = f"bytes={2**63 - 1}-"
# Positions longer than this are beyond any blob (and int() refuses thousands of digits).
_DIGITS = 19


def parse_file_range(value: str | None, size: int) -> tuple[int, int] | None:
    """The byte range of a blob read as (start, end inclusive); None: the whole blob.

    Every path that serves blob bytes (a local file, a blob cache, ECR's storage or another
    replica through this gateway) resolves the Range here, so all answer alike: a single
    range it cannot satisfy (or a malformed one) gets 416 with the OCI body and
    ``Content-Range: bytes */<size>``; a last-byte position past the end means up to the end
    (RFC 9110 14.1.2), however many digits it has."""
    try:
        spec = _byte_range(value)
    except _Malformed:
        raise _unsatisfiable(size) from None
    if spec is None:
        return None
    first, last = spec
    if not first:  # suffix range: the last N bytes
        length = int(last) if len(last) <= _DIGITS else size
        if length == 0 or size == 0:  # nothing to take the last bytes of
            raise _unsatisfiable(size)
        return max(size - length, 0), size - 1
    if len(first) > _DIGITS or int(first) >= size:
        raise _unsatisfiable(size)
    start = int(first)
    if not last or len(last) > _DIGITS:
        return start, size - 1
    if int(last) < start:
        raise _unsatisfiable(size)
    return start, min(int(last), size - 1)


# The name the reads of blobs stored elsewhere used; one rule now serves every path.
parse_read_range = parse_file_range


def asks_range(value: str | None) -> bool:
    """Whether a blob read is for a part of the blob (a Range this gateway serves or
    refuses), not the whole of it."""
    try:
        return _byte_range(value) is not None
    except _Malformed:
        return True


def forwarded_range(value: str | None, size: int) -> str | None:
    """The Range to ask the storage that holds a blob of ``size`` bytes for (None: the
    whole blob): resolved here, so that the storage's own reading of Range headers (a
    multi-range, a 20-digit position) cannot make this path answer otherwise than a local
    file would. With the size unknown (-1), the one range normalized: a huge last-byte
    position clamped, a malformed or unsatisfiable one made one no blob satisfies."""
    if size >= 0:
        span = parse_file_range(value, size)
        return None if span is None else f"bytes={span[0]}-{span[1]}"
    try:
        spec = _byte_range(value)
    except _Malformed:
        return _NEVER  # refused there as here: 416
    if spec is None:
        return None
    first, last = spec
    if len(first) > _DIGITS:
        return _NEVER
    if not first:  # a suffix of no bytes selects nothing, however the storage reads it
        if not last.strip("0"):
            return _NEVER
        return f"bytes=-{last}" if len(last) <= _DIGITS else "bytes=0-"
    return f"bytes={first}-{last if len(last) <= _DIGITS else ''}"


def _unsatisfiable(size: int) -> OciError:
    return OciError(RANGE_INVALID, {"size": size}, headers={"Content-Range": f"bytes */{size}"})
