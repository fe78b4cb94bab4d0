"""The emulator's per-access-key rules (ecr_emulator/access.py), evaluated as IAM does."""

from __future__ import annotations

import pytest

from ecr_emulator.access import Policies
from ecr_emulator.errors import AwsError

DOCUMENT = {
    "AKIDALICE": [
        {"Effect": "Allow", "Action": "ecr:*", "Resource": "team-a/*"},
        {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"]},
    ],
    "AKIDBOB": [
        {"Effect": "Allow", "Action": "*"},
        {"Effect": "Deny", "Action": ["ecr:PutImage", "ecr:InitiateLayerUpload"],
         "Resource": "arn:aws:ecr:*:*:repository/team-a/*"},
    ],
    "*": [{"Effect": "Allow", "Action": ["ecr:Describe*", "ecr:GetAuthorizationToken"],
           "Resource": "*"}],
}


def check(policies: Policies, key: str, action: str, **params: object) -> str:
    try:
        policies.check(key, action, dict(params), account_id="123456789012",
                       region="us-east-1")
    except AwsError as exc:
        assert exc.name == "AccessDeniedException" and exc.status == 400
        return exc.message
    return "allowed"


@pytest.mark.parametrize(("key", "action", "params", "allowed"), [
    ("AKIDALICE", "PutImage", {"repositoryName": "team-a/app"}, True),
    ("AKIDALICE", "PutImage", {"repositoryName": "team-b/app"}, False),
    ("AKIDALICE", "GetAuthorizationToken", {}, True),
    ("AKIDALICE", "DescribeRepositories", {}, False),  # no repository named: needs "*"
    ("AKIDALICE", "DescribeRepositories", {"repositoryNames": ["team-a/x", "team-b/y"]},
     False),  # every named repository must be allowed
    ("AKIDBOB", "BatchGetImage", {"repositoryName": "team-a/app"}, True),
    ("AKIDBOB", "PutImage", {"repositoryName": "team-a/app"}, False),  # explicit deny wins
    ("AKIDBOB", "PutImage", {"repositoryName": "team-b/app"}, True),
    ("AKIDOTHER", "DescribeImages", {"repositoryName": "any"}, True),  # the "*" entry
    ("AKIDOTHER", "PutImage", {"repositoryName": "any"}, False),
])
def test_evaluation(key: str, action: str, params: dict[str, object], allowed: bool) -> None:
    result = check(Policies(DOCUMENT), key, action, **params)
    assert (result == "allowed") is allowed, result


def test_messages_say_why() -> None:
    policies = Policies(DOCUMENT)
    denied = check(policies, "AKIDBOB", "PutImage", repositoryName="team-a/app")
    assert "explicit deny" in denied and "ecr:PutImage" in denied
    assert "repository/team-a/app" in denied
    missing = check(policies, "AKIDALICE", "PutImage", repositoryName="team-b/app")
    assert "no identity-based policy allows" in missing


def test_no_rules_allow_everything() -> None:
    assert check(Policies(), "AKIDANY", "DeleteRepository", repositoryName="x") == "allowed"
    only_alice = Policies({"AKIDALICE": []})
    assert check(only_alice, "AKIDBOB", "PutImage", repositoryName="x") == "allowed"
    assert check(only_alice, "AKIDALICE", "PutImage", repositoryName="x") != "allowed"


@pytest.mark.parametrize("document", [
    [], {"K": {}}, {"K": [{"Effect": "Maybe", "Action": "*"}]},
    {"K": [{"Effect": "Allow"}]}, {"K": [{"Effect": "Allow", "Action": "*", "Extra": 1}]},
    {"K": [{"Effect": "Allow", "Action": "*", "Resource": []}]},
])
def test_malformed_documents_are_refused(document: object) -> None:
    with pytest.raises(ValueError):
        Policies(document)
