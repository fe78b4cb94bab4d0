"""OCI error codes, each declared once with its HTTP status, and the exception handlers raise.

Rendered by :mod:`gateway.oci.middleware` as ``{"errors": [{"code", "message", "detail"}]}``.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorCode:
    code: str
    message: str
    status: int


# distribution-spec 1.1, "Error Codes" (end of spec.md); statuses as the reference registry.
BLOB_UNKNOWN = ErrorCode("BLOB_UNKNOWN", "blob unknown to registry", 404)
BLOB_UPLOAD_INVALID = ErrorCode("BLOB_UPLOAD_INVALID", "blob upload invalid", 400)
BLOB_UPLOAD_UNKNOWN = ErrorCode("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", 404)
DIGEST_INVALID = ErrorCode("DIGEST_INVALID", "provided digest did not match uploaded content", 400)
MANIFEST_BLOB_UNKNOWN = ErrorCode(
    "MANIFEST_BLOB_UNKNOWN", "manifest references a manifest or blob unknown to registry", 400
)
MANIFEST_INVALID = ErrorCode("MANIFEST_INVALID", "manifest invalid", 400)
MANIFEST_UNKNOWN = ErrorCode("MANIFEST_UNKNOWN", "manifest unknown to registry", 404)
NAME_INVALID = ErrorCode("NAME_INVALID", "invalid repository name", 400)
NAME_UNKNOWN = ErrorCode("NAME_UNKNOWN", "repository name not known to registry", 404)
SIZE_INVALID = ErrorCode("SIZE_INVALID", "provided length did not match content length", 400)
UNAUTHORIZED = ErrorCode("UNAUTHORIZED", "authentication required", 401)
DENIED = ErrorCode("DENIED", "requested access to the resource is denied", 403)
UNSUPPORTED = ErrorCode("UNSUPPORTED", "the operation is unsupported", 405)
TOOMANYREQUESTS = ErrorCode("TOOMANYREQUESTS", "too many requests", 429)
# Codes the reference registry adds beyond the spec's table.
RANGE_INVALID = ErrorCode("BLOB_UPLOAD_INVALID", "requested range not satisfiable", 416)
TAG_INVALID = ErrorCode("TAG_INVALID", "manifest tag did not match URI", 400)
TAG_IMMUTABLE = ErrorCode("TAG_IMMUTABLE", "tag is immutable in this repository", 409)
PAGINATION_INVALID = ErrorCode(
    "PAGINATION_NUMBER_INVALID", "invalid number of results requested", 400)
UNAVAILABLE = ErrorCode("UNAVAILABLE", "service unavailable", 503)
UPSTREAM_ERROR = ErrorCode("UNKNOWN", "upstream registry error", 502)
NOT_FOUND = ErrorCode("NOT_FOUND", "no such endpoint", 404)
METHOD_UNKNOWN = ErrorCode("UNSUPPORTED", "method not allowed on this endpoint", 405)
TOO_LARGE = ErrorCode("SIZE_INVALID", "request too large", 413)
# The spec's UNSUPPORTED covers "an invalid set of parameters": a request the HTTP layer
# could not make sense of (broken request line, bad headers).
REQUEST_INVALID = ErrorCode("UNSUPPORTED", "malformed HTTP request", 400)
# ...and a request whose parameters the storage refused as malformed.
PARAMETER_INVALID = ErrorCode("UNSUPPORTED", "invalid request parameter", 400)


class OciError(Exception):
    """Raised by handlers and backends; the middleware turns it into the OCI JSON body."""

    def __init__(
        self,
        error: ErrorCode,
        detail: Any = None,
        *,
        message: str | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message or error.message)
        self.error = error
        self.detail = detail
        self.message = message or error.message
        self.headers = headers or {}
        self.status = status or error.status

    def body(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"code": self.error.code, "message": self.message}
        entry["detail"] = self.detail if self.detail is not None else {}
        return {"errors": [entry]}


class RequestRefused(OciError):
    """A refusal of a request as a whole: an upload keeps nothing of the request's body and
    stands where it stood before it (the client sends the same chunk again)."""


def malformed_body(exc: BaseException) -> RequestRefused:
    """The answer to a body that broke while it was read (a Content-Encoding it does not
    decode in, a chunked framing that goes wrong past the head): the client's fault, refused
    as a whole. ``detail`` names the kind of fault, never the bytes."""
    cause = exc.__cause__ or exc
    return RequestRefused(REQUEST_INVALID, {"reason": type(cause).__name__},
                          message="the request body is malformed")


# A file system out of space (or out of the user's quota).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_FULL_MESSAGE = "the gateway's disk is full"


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def disk_full(error: OSError | None = None) -> RequestRefused:
    """The answer to a request this gateway's own disk could not take: the server side is
    unavailable for now (507 is not an OCI error), so UNAVAILABLE with Retry-After, as for
    every other such condition; no details of paths."""
    quota = error is not None and error.errno == errno.EDQUOT
    reason = "disk quota exceeded" if quota else "no space left"
    return RequestRefused(UNAVAILABLE, {"reason": reason}, message=DISK_FULL_MESSAGE,
                          headers={"Retry-After": "10"})
