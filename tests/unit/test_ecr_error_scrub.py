"""ECR error messages lose account ids and ARNs before they reach a registry client."""

from __future__ import annotations

from gateway.ecr.errors import EcrError, scrub


def test_scrub_removes_accounts_and_arns() -> None:
    message = ("User: arn:aws:sts::123456789012:assumed-role/ci/session is not authorized "
               "to perform: ecr:PutImage on resource: arn:aws-cn:ecr:cn-north-1:"
               "210987654321:repository/app in registry 123456789012")
    clean = scrub(message)
    assert "123456789012" not in clean and "210987654321" not in clean
    assert "arn:aws" not in clean
    assert "ecr:PutImage" in clean and "not authorized" in clean
    digest = "sha256:ab" + "1" * 12 + "cd" * 25
    assert scrub(f"image {digest} not found") == f"image {digest} not found"


def test_ecr_error_body_is_scrubbed() -> None:
    error = EcrError("PutImage", "AccessDeniedException",
                     "denied on arn:aws:ecr:us-east-1:123456789012:repository/x", {})
    assert "123456789012" not in str(error.body())
