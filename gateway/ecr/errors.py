"""The one table from ECR exceptions to OCI errors, per action.

An ECR exception means different things depending on the action that raised it: an
InvalidParameterException is an invalid manifest on PutImage but an invalid blob upload on
UploadLayerPart, a missing layer is BLOB_UNKNOWN on a read but MANIFEST_BLOB_UNKNOWN on
PutImage. Each action belongs to the OCI operation it serves; the table is keyed by
(exception, operation), with a fallback per exception for what means the same everywhere.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.oci import errors as oci
from gateway.oci.errors import ErrorCode, OciError

# The OCI operation each ECR action serves (actions not listed: "other").
_OPERATION = {
    "InitiateLayerUpload": "upload", "UploadLayerPart": "upload",
    "CompleteLayerUpload": "upload",
    "BatchCheckLayerAvailability": "blob", "GetDownloadUrlForLayer": "blob",
    "PutImage": "manifest_put",
    "BatchGetImage": "manifest", "DescribeImages": "manifest", "BatchDeleteImage": "manifest",
    "ListImages": "listing", "DescribeImageTags": "listing",
    "DescribeRepositories": "listing", "ListImageReferrers": "referrers",
}

# A request ECR found malformed, by operation (also botocore's own ParamValidationError).
_INVALID_REQUEST = {
    "upload": oci.BLOB_UPLOAD_INVALID,
    "blob": oci.DIGEST_INVALID,  # the layer digests are the only free-form parameter
    "manifest_put": oci.MANIFEST_INVALID,
    "listing": oci.PAGINATION_INVALID,
}

_BY_OPERATION: dict[tuple[str, str], ErrorCode] = {
    **{("InvalidParameterException", op): code for op, code in _INVALID_REQUEST.items()},
    **{("ValidationException", op): code for op, code in _INVALID_REQUEST.items()},
    ("LayersNotFoundException", "manifest_put"): oci.MANIFEST_BLOB_UNKNOWN,
    ("ReferencedImagesNotFoundException", "manifest_put"): oci.MANIFEST_BLOB_UNKNOWN,
    ("LimitExceededException", "manifest_put"): oci.MANIFEST_INVALID,  # e.g. too many layers
    ("LimitExceededException", "upload"): oci.BLOB_UPLOAD_INVALID,  # too many parts or bytes
    ("ImageNotFoundException", "manifest"): oci.MANIFEST_UNKNOWN,
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
    "InvalidParameterException": oci.PARAMETER_INVALID,
    "ValidationException": oci.PARAMETER_INVALID,
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


def oci_error_for(action: str, code: str) -> ErrorCode:
    """The OCI error an ECR exception ``code`` stands for when ``action`` raised it."""
    operation = _OPERATION.get(action, "other")
    return _BY_OPERATION.get((code, operation)) or _BY_CODE.get(code, oci.UPSTREAM_ERROR)


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
        error = oci_error_for(action, code)
        headers = {"Retry-After": "1"} if error.status in (429, 503) else None
        super().__init__(error, {"ecr_action": action, "ecr_error": code},
                         message=f"{error.message}: {scrub(message)}" if message else None,
                         headers=headers)
        self.action = action
        self.code = code
        self.response = response
