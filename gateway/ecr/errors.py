"""The one table from ECR exceptions to OCI errors.

Some ECR exceptions mean different things depending on the action that raised them (a
missing layer is BLOB_UNKNOWN on a read but MANIFEST_BLOB_UNKNOWN on PutImage), so the
table is keyed by exception name with optional per-action entries.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.oci import errors as oci
from gateway.oci.errors import ErrorCode, OciError

_BY_ACTION: dict[tuple[str, str], ErrorCode] = {
    ("LayersNotFoundException", "PutImage"): oci.MANIFEST_BLOB_UNKNOWN,
    ("ReferencedImagesNotFoundException", "PutImage"): oci.MANIFEST_BLOB_UNKNOWN,
    ("InvalidParameterException", "PutImage"): oci.MANIFEST_INVALID,
    ("LimitExceededException", "PutImage"): oci.MANIFEST_INVALID,
    ("ImageNotFoundException", "BatchDeleteImage"): oci.MANIFEST_UNKNOWN,
}

_BY_CODE: dict[str, ErrorCode] = {
    "RepositoryNotFoundException": oci.NAME_UNKNOWN,
    "RepositoryPolicyNotFoundException": oci.NAME_UNKNOWN,
    "ImageNotFoundException": oci.MANIFEST_UNKNOWN,
    "LayersNotFoundException": oci.BLOB_UNKNOWN,
    "LayerInaccessibleException": oci.BLOB_UNKNOWN,
    "UploadNotFoundException": oci.BLOB_UPLOAD_UNKNOWN,
    "InvalidLayerException": oci.DIGEST_INVALID,
    "ImageDigestDoesNotMatchException": oci.DIGEST_INVALID,
    "InvalidLayerPartException": oci.RANGE_INVALID,
    "LayerPartTooSmallException": oci.BLOB_UPLOAD_INVALID,
    "EmptyUploadException": oci.BLOB_UPLOAD_INVALID,
    "ImageTagAlreadyExistsException": oci.TAG_IMMUTABLE,
    "ReferencedImagesNotFoundException": oci.MANIFEST_BLOB_UNKNOWN,
    "InvalidParameterException": oci.MANIFEST_INVALID,
    "ValidationException": oci.MANIFEST_INVALID,
    "InvalidTagParameterException": oci.TAG_INVALID,
    "LimitExceededException": oci.DENIED,
    "AccessDeniedException": oci.DENIED,
    "UnrecognizedClientException": oci.DENIED,
    "KmsException": oci.UPSTREAM_ERROR,
    "ThrottlingException": oci.TOOMANYREQUESTS,
    "TooManyRequestsException": oci.TOOMANYREQUESTS,
    "ServerException": oci.UNAVAILABLE,
    "ServiceUnavailableException": oci.UNAVAILABLE,
    "InternalFailure": oci.UNAVAILABLE,
}

THROTTLES = frozenset({"ThrottlingException", "TooManyRequestsException", "Throttling",
                       "RequestLimitExceeded", "SlowDown"})
SERVER_FAULTS = frozenset({"ServerException", "ServiceUnavailableException", "InternalFailure",
                           "ServiceUnavailable", "InternalError"})


# What ECR messages name that a registry client has no business learning: the account
# (a 12-digit id, also inside registry ids) and resource ARNs, which carry it and more.
_ARN = re.compile(r"\barn:aws[a-z-]*:[^\s'\"]*", re.IGNORECASE)
# (a run of 12 digits inside a hex digest is not an account id)
_ACCOUNT = re.compile(r"(?<![0-9a-zA-Z])[0-9]{12}(?![0-9a-zA-Z])")


def scrub(message: str) -> str:
    """``message`` without ARNs or account ids (the full text goes to the log only)."""
    return _ACCOUNT.sub("<account>", _ARN.sub("<arn>", message))


class EcrError(OciError):
    """An ECR API exception, already mapped to its OCI error; ``code`` keeps ECR's name."""

    def __init__(self, action: str, code: str, message: str, response: dict[str, Any]) -> None:
        error = _BY_ACTION.get((code, action)) or _BY_CODE.get(code, oci.UPSTREAM_ERROR)
        headers = {"Retry-After": "1"} if error.status in (429, 503) else None
        super().__init__(error, {"ecr_action": action, "ecr_error": code},
                         message=f"{error.message}: {scrub(message)}" if message else None,
                         headers=headers)
        self.action = action
        self.code = code
        self.response = response
