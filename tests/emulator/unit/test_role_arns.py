"""customRoleArn: an IAM role ARN of the registry's own account, its name in IAM's ASCII
characters."""

from __future__ import annotations

import pytest

from ecr_emulator.errors import AwsError
from ecr_emulator.role_arns import check_custom_role

ACCOUNT = "123456789012"


@pytest.mark.parametrize("arn", [f"arn:aws:iam::{ACCOUNT}:role/puller",
                                 f"arn:aws:iam::{ACCOUNT}:role/path/ecr+pull=1,a.b@c-d_e"])
def test_a_role_of_the_account_is_taken(arn: str) -> None:
    check_custom_role(arn, ACCOUNT)


@pytest.mark.parametrize("arn", [f"arn:aws:iam::{ACCOUNT}:role/caf\u00e9",
                                 f"arn:aws:iam::{ACCOUNT}:role/\u0440\u043e\u043b\u044c",
                                 f"arn:aws:iam::{ACCOUNT}:user/puller",
                                 "arn:aws:iam::210987654321:role/puller"])
def test_anything_else_is_refused(arn: str) -> None:
    with pytest.raises(AwsError) as refused:
        check_custom_role(arn, ACCOUNT)
    assert refused.value.name == "InvalidParameterException"
