"""The ``customRoleArn`` a pull through cache rule or a repository creation template names.

ECR's model documents the same constraint on each of the four requests that take one
(Create/UpdatePullThroughCacheRule, Create/UpdateRepositoryCreationTemplate): "This role
must be in the same account as the registry that you are configuring." A value that is not
an IAM role ARN of that account is refused as the other constraint violations are.
"""

from __future__ import annotations

import re

from ecr_emulator.errors import AwsError

# arn:<partition>:iam::<account>:role/<optional path/>name; IAM names are ASCII (its \w is
# Java's, not Python's Unicode one)
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::(?P<account>[0-9]{12}):role/[\w+=,.@/-]+",
                       re.ASCII)


def check_custom_role(arn: str | None, account_id: str) -> None:
    """Refuse ``arn`` unless it is an IAM role of ``account_id`` (absent or empty: no role)."""
    if not arn:
        return
    match = _ROLE_ARN.fullmatch(arn)
    if match is None:
        raise AwsError("InvalidParameterException",
                       f"Invalid parameter at 'customRoleArn' failed to satisfy constraint: "
                       f"'{arn}' is not an IAM role ARN")
    if match["account"] != account_id:
        raise AwsError("InvalidParameterException",
                       f"Invalid parameter at 'customRoleArn' failed to satisfy constraint: "
                       f"'the role must be in the same account as the registry "
                       f"({account_id})'")
