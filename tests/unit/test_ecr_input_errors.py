"""ECR's refusals of a request's input are the client's mistake: a 4xx OCI error, never a
5xx or a Retry-After, whichever action refused it and whether ECR names it
InvalidParameterException (what it answers a broken constraint of the model with) or
ValidationException (which 37 actions declare as well)."""

from __future__ import annotations

import pytest

from gateway.ecr.errors import EcrError

# Every ECR and ECR Public action the gateway calls.
ACTIONS = ("BatchCheckLayerAvailability", "BatchDeleteImage", "BatchGetImage",
           "CompleteLayerUpload", "CreateRepository", "DescribeImages", "DescribeRegistries",
           "GetAuthorizationToken", "GetDownloadUrlForLayer", "InitiateLayerUpload",
           "ListImages", "DescribeImageTags", "DescribeRepositories", "ListImageReferrers",
           "PutImage", "PutLifecyclePolicy", "PutRepositoryCatalogData",
           "SetRepositoryPolicy", "UploadLayerPart")


@pytest.mark.parametrize("code", ["InvalidParameterException", "ValidationException"])
@pytest.mark.parametrize("action", ACTIONS)
def test_an_input_refusal_is_a_client_error(action: str, code: str) -> None:
    error = EcrError(action, code, "Invalid parameter at 'maxResults' failed to satisfy "
                                   "constraint: 'Member must have value less than or equal "
                                   "to 1000'", {})
    assert 400 <= error.error.status < 500, (action, code, error.error)
    assert not error.headers


def test_the_oci_error_fits_the_operation() -> None:
    codes = {action: EcrError(action, "InvalidParameterException", "", {}).error.code
             for action in ("PutImage", "UploadLayerPart", "BatchCheckLayerAvailability",
                            "ListImages", "ListImageReferrers")}
    assert codes == {"PutImage": "MANIFEST_INVALID", "UploadLayerPart": "BLOB_UPLOAD_INVALID",
                     "BatchCheckLayerAvailability": "DIGEST_INVALID",
                     "ListImages": "PAGINATION_NUMBER_INVALID",
                     "ListImageReferrers": "UNSUPPORTED"}
