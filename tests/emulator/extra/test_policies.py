"""Repository policies: validated when set, and enforced for the identities the emulator
knows (access key K is arn:aws:iam::<account>:user/K), combined with the per-key rules of
``/_emulator/policies`` as IAM combines identity and resource policies."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.emulator.api.helpers import push_image
from tests.emulator.extra.helpers import policy, public_client, user
from tests.support.emulator import ACCOUNT_ID, EmulatorProcess, ecr_client


def key() -> str:
    return f"AKID{uuid.uuid4().hex[:12].upper()}"


@pytest.fixture
def rules(extra_emulator: EmulatorProcess) -> Iterator[None]:
    """Per-key identity rules a test installs are removed after it."""
    yield
    _admin(extra_emulator, "DELETE", None)


def _admin(emulator: EmulatorProcess, method: str, body: Any) -> None:
    emulator.control(method, "policies", body)


async def test_an_explicit_deny_in_the_repository_policy_wins(
        ecr: Any, repo: str, extra_emulator: EmulatorProcess) -> None:
    """Bob may do everything (no identity rules), yet the repository denies him PutImage;
    Alice is unaffected; another repository is unaffected."""
    bob, alice = key(), key()
    await ecr.create_repository(repositoryName=repo)
    text = policy({"Sid": "NoPushForBob", "Effect": "Deny",
                   "Principal": {"AWS": [user(ACCOUNT_ID, bob)]},
                   "Action": ["ecr:PutImage", "ecr:InitiateLayerUpload"]})
    answer = await ecr.set_repository_policy(repositoryName=repo, policyText=text)
    assert answer["policyText"] == text and answer["registryId"] == ACCOUNT_ID
    async with ecr_client(extra_emulator.url, access_key_id=bob,
                          retries={"total_max_attempts": 1}) as as_bob:
        with pytest.raises(as_bob.exceptions.ClientError) as info:
            await push_image(as_bob, repo, "v1")
        error = info.value.response["Error"]
        assert error["Code"] == "AccessDeniedException"
        assert f"user/{bob} is not authorized to perform: ecr:InitiateLayerUpload" in \
            error["Message"] and "resource-based policy" in error["Message"]
        await as_bob.describe_images(repositoryName=repo)  # not denied
        await as_bob.create_repository(repositoryName=repo + "-other")
        await push_image(as_bob, repo + "-other", "v1")
    async with ecr_client(extra_emulator.url, access_key_id=alice) as as_alice:
        await push_image(as_alice, repo, "v1")
    entries = [e for e in extra_emulator.requests("InitiateLayerUpload")
               if e["repository"] == repo]
    assert [(e["access_key_id"], e["outcome"]) for e in entries][:2] == [
        (bob, "AccessDeniedException"), (alice, "ok")]


async def test_the_repository_policy_grants_what_identity_rules_do_not(
        ecr: Any, repo: str, extra_emulator: EmulatorProcess, rules: None) -> None:
    """Carol's identity rules allow describing only; the repository policy lets her pull
    from this repository (and only this one). Naming her account instead of her user grants
    nothing by itself: an account principal delegates to the identity rules."""
    carol = key()
    for name in (repo, repo + "-b"):
        await ecr.create_repository(repositoryName=name)
        await push_image(ecr, name, "v1")
    _admin(extra_emulator, "PUT", {carol: [{"Effect": "Allow", "Action": "ecr:Describe*"}]})
    async with ecr_client(extra_emulator.url, access_key_id=carol,
                          retries={"total_max_attempts": 1}) as as_carol:
        pull = {"repositoryName": repo, "imageIds": [{"imageTag": "v1"}]}
        with pytest.raises(as_carol.exceptions.ClientError) as info:
            await as_carol.batch_get_image(**pull)
        assert "no identity-based policy allows" in info.value.response["Error"]["Message"]
        await ecr.set_repository_policy(repositoryName=repo, policyText=policy(
            {"Effect": "Allow", "Principal": {"AWS": ACCOUNT_ID}, "Action": "ecr:*"}))
        with pytest.raises(as_carol.exceptions.ClientError):
            await as_carol.batch_get_image(**pull)
        await ecr.set_repository_policy(repositoryName=repo, policyText=policy(
            {"Effect": "Allow", "Principal": {"AWS": user(ACCOUNT_ID, carol)},
             "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]}))
        assert (await as_carol.batch_get_image(**pull))["images"]
        with pytest.raises(as_carol.exceptions.ClientError):
            await as_carol.batch_get_image(**{**pull, "repositoryName": repo + "-b"})
        await as_carol.describe_repositories(repositoryNames=[repo])


async def test_an_account_wide_deny_applies_to_every_identity(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    await ecr.set_repository_policy(repositoryName=repo, policyText=policy(
        {"Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
         "NotAction": ["ecr:*RepositoryPolicy", "ecr:Describe*"]}))
    with pytest.raises(ecr.exceptions.ClientError) as info:
        await ecr.list_images(repositoryName=repo)
    assert info.value.response["Error"]["Code"] == "AccessDeniedException"
    await ecr.describe_repositories(repositoryNames=[repo])
    removed = await ecr.delete_repository_policy(repositoryName=repo)
    assert "NotAction" in removed["policyText"]
    await ecr.list_images(repositoryName=repo)


async def test_a_lockout_needs_force(ecr: Any, repo: str) -> None:
    """A policy denying its setter SetRepositoryPolicy is refused unless forced."""
    await ecr.create_repository(repositoryName=repo)
    text = policy({"Effect": "Deny", "Principal": "*", "Action": "ecr:SetRepositoryPolicy"})
    with pytest.raises(ecr.exceptions.InvalidParameterException) as info:
        await ecr.set_repository_policy(repositoryName=repo, policyText=text)
    assert "force" in info.value.response["Error"]["Message"]
    with pytest.raises(ecr.exceptions.RepositoryPolicyNotFoundException):
        await ecr.get_repository_policy(repositoryName=repo)
    await ecr.set_repository_policy(repositoryName=repo, policyText=text, force=True)
    assert (await ecr.get_repository_policy(repositoryName=repo))["policyText"] == text
    with pytest.raises(ecr.exceptions.ClientError) as denied:
        await ecr.set_repository_policy(repositoryName=repo, policyText=policy(
            {"Effect": "Allow", "Principal": "*", "Action": "ecr:*"}))
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    await ecr.delete_repository_policy(repositoryName=repo)  # still allowed: the way out


@pytest.mark.parametrize(("text", "fragment"), [
    ("not json", "not valid JSON"),
    ("[]", "JSON object"),
    (json.dumps({"Version": "2020-01-01", "Statement": []}), "Version"),
    (policy(), "non-empty"),
    (policy({"Effect": "Maybe", "Principal": "*", "Action": "ecr:*"}), "Effect"),
    (policy({"Effect": "Allow", "Action": "ecr:*"}), "Principal"),
    (policy({"Effect": "Allow", "Principal": "*"}), "Action"),
    (policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject"}),
     "not an action of ecr"),
    (policy({"Effect": "Allow", "Principal": {"Robot": "x"}, "Action": "ecr:*"}),
     "unknown kind"),
    (policy({"Effect": "Allow", "Principal": "*", "Action": "ecr:*", "When": 1}),
     "unknown element"),
    # The IAM grammar's types: such values used to be stored as given.
    (policy({"Sid": 2**63, "Effect": "Allow", "Principal": "*", "Action": "ecr:*"}),
     "Sid must be a string"),
    (json.dumps({"Id": [[[]]], "Statement": [{"Effect": "Allow", "Principal": "*",
                                               "Action": "ecr:*"}]}), "Id must be a string"),
    (policy({"Effect": "Allow", "Principal": "*", "Action": "ecr:*",
             "Condition": {"StringEquals": "x"}}), "object of condition keys"),
    (policy({"Effect": "Allow", "Principal": "*", "Action": "ecr:*",
             "Condition": {"StringEquals": {"aws:username": [["x"]]}}}),
     "string, number or boolean"),
])
async def test_invalid_policies_are_refused(ecr: Any, repo: str, text: str,
                                            fragment: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    with pytest.raises(ecr.exceptions.InvalidParameterException) as info:
        await ecr.set_repository_policy(repositoryName=repo, policyText=text)
    message = info.value.response["Error"]["Message"]
    assert message.startswith("Invalid parameter at 'PolicyText' failed to satisfy constraint")
    assert fragment in message


async def test_ecr_public_repository_policies(extra_emulator: EmulatorProcess, pub: Any) -> None:
    """ECR Public: the same actions and enforcement, with ecr-public: action names."""
    dave, name = key(), f"pol-{uuid.uuid4().hex[:8]}"
    await pub.create_repository(repositoryName=name)
    with pytest.raises(pub.exceptions.InvalidParameterException):
        await pub.set_repository_policy(repositoryName=name, policyText=policy(
            {"Effect": "Deny", "Principal": "*", "Action": "ecr:PutImage"}))
    await pub.set_repository_policy(repositoryName=name, policyText=policy(
        {"Effect": "Deny", "Principal": {"AWS": user(ACCOUNT_ID, dave)},
         "Action": "ecr-public:DeleteRepository"}))
    async with public_client(extra_emulator.url, access_key_id=dave) as as_dave:
        with pytest.raises(as_dave.exceptions.ClientError) as info:
            await as_dave.delete_repository(repositoryName=name)
        assert "ecr-public:DeleteRepository" in info.value.response["Error"]["Message"]
        assert (await as_dave.get_repository_policy(repositoryName=name))["policyText"]
    await pub.delete_repository(repositoryName=name)
    outcomes = [e["outcome"] for e in extra_emulator.requests("ecr-public:DeleteRepository")
                if e["repository"] == name]
    assert outcomes == ["AccessDeniedException", "ok"]
