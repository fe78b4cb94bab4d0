"""Calls on another account's repositories (``registryId``): refused with AccessDeniedException
unless a resource-based policy of that account allows the caller the action, as in ECR.

Account A is the emulator's own; account B's key is in the same credentials file with
``aws_account_id`` B, and B's clients pass ``registryId=A``."""

from __future__ import annotations

import functools
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import ClientError

from tests.emulator.api.helpers import digest, push_image, push_layer
from tests.emulator.extra.helpers import policy, user
from tests.support.emulator import ACCOUNT_ID, REGION, EmulatorProcess, ecr_client

OTHER_ACCOUNT = "210987654321"
PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
PUSH = ["ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload",
        "ecr:PutImage", "ecr:BatchCheckLayerAvailability"]


class InRegistry:
    """A client whose every call names registry ``registry_id``."""

    def __init__(self, client: Any, registry_id: str) -> None:
        self.client = client
        self.registry_id = registry_id

    def __getattr__(self, name: str) -> Any:
        return functools.partial(getattr(self.client, name), registryId=self.registry_id)


@pytest.fixture
def other_key(extra_emulator: EmulatorProcess) -> str:
    key = f"AKIDB{uuid.uuid4().hex[:12].upper()}"
    extra_emulator.add_key(key, account_id=OTHER_ACCOUNT)
    return key


@pytest.fixture
async def other(extra_emulator: EmulatorProcess, other_key: str) -> AsyncIterator[Any]:
    """Account B's client, every call naming account A's registry."""
    async with ecr_client(extra_emulator.url, access_key_id=other_key,
                          retries={"total_max_attempts": 1}) as client:
        yield InRegistry(client, ACCOUNT_ID)


@pytest.fixture
def rules(extra_emulator: EmulatorProcess) -> Iterator[None]:
    yield
    extra_emulator.control("DELETE", "policies", None)


async def refusal(call: Any) -> dict[str, Any]:
    """The error ``call`` (an awaitable) fails with, and its HTTP status."""
    with pytest.raises(ClientError) as info:
        await call
    response = info.value.response
    return {**response["Error"], "status": response["ResponseMetadata"]["HTTPStatusCode"]}


def denied(key: str, action: str, repo: str, why: str) -> str:
    return (f"User: {user(OTHER_ACCOUNT, key)} is not authorized to perform: ecr:{action} on "
            f"resource: arn:aws:ecr:{REGION}:{ACCOUNT_ID}:repository/{repo} {why}")


def no_policy(key: str, action: str, repo: str) -> str:
    return denied(key, action, repo,
                  f"because no resource-based policy allows the ecr:{action} action")


async def test_a_foreign_pull_needs_the_repository_policy(
        ecr: Any, other: Any, other_key: str, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    layer = os.urandom(300)
    image, text = await push_image(ecr, repo, "v1", layers=[layer])
    pull = {"repositoryName": repo, "imageIds": [{"imageTag": "v1"}]}

    error = await refusal(other.batch_get_image(**pull))
    assert error == {"Code": "AccessDeniedException", "status": 400,
                     "Message": no_policy(other_key, "BatchGetImage", repo)}
    # A repository A does not have answers the same: B learns nothing of A's registry.
    absent = await refusal(other.batch_get_image(repositoryName=repo + "-absent",
                                                 imageIds=[{"imageTag": "v1"}]))
    assert absent["Message"] == no_policy(other_key, "BatchGetImage", repo + "-absent")

    await ecr.set_repository_policy(repositoryName=repo, policyText=policy({
        "Sid": "PullForB", "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:root"}, "Action": PULL}))
    got = await other.batch_get_image(**pull)
    assert [(i["registryId"], i["imageId"]["imageDigest"], i["imageManifest"])
            for i in got["images"]] == [(ACCOUNT_ID, image, text)]
    checked = await other.batch_check_layer_availability(repositoryName=repo,
                                                         layerDigests=[digest(layer)])
    assert checked["layers"][0]["layerAvailability"] == "AVAILABLE"
    url = (await other.get_download_url_for_layer(repositoryName=repo,
                                                  layerDigest=digest(layer)))["downloadUrl"]
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            assert response.status == 200 and await response.read() == layer
        async with session.get(url.replace("X-Amz-Signature=", "X-Amz-Signature=0")) as edited:
            assert edited.status == 403
    # Only the actions granted: listing is still refused, and B's registry has no copy.
    listed = await refusal(other.list_images(repositoryName=repo))
    assert listed["Message"] == no_policy(other_key, "ListImages", repo)
    with pytest.raises(other.client.exceptions.RepositoryNotFoundException):
        await other.client.describe_repositories(repositoryNames=[repo])

    await ecr.delete_repository_policy(repositoryName=repo)
    again = await refusal(other.batch_get_image(**pull))
    assert again["Code"] == "AccessDeniedException"
    assert (await ecr.batch_get_image(**pull))["images"][0]["imageManifest"] == text


async def test_an_explicit_deny_wins_over_a_wildcard_allow(
        ecr: Any, other: Any, other_key: str, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    await push_image(ecr, repo, "v1")
    await ecr.set_repository_policy(repositoryName=repo, policyText=policy(
        {"Effect": "Allow", "Principal": "*", "Action": "ecr:*"},
        {"Effect": "Deny", "Principal": {"AWS": user(OTHER_ACCOUNT, other_key)},
         "Action": "ecr:BatchGetImage"}))
    error = await refusal(other.batch_get_image(repositoryName=repo,
                                                imageIds=[{"imageTag": "v1"}]))
    assert error["Message"] == denied(other_key, "BatchGetImage", repo,
                                      "with an explicit deny in a resource-based policy")
    assert [i["imageTag"] for i in
            (await other.list_images(repositoryName=repo))["imageIds"]] == ["v1"]
    assert len((await other.describe_images(repositoryName=repo))["imageDetails"]) == 1

    # A Deny with a condition the emulator does not evaluate is taken to apply; an Allow
    # with one grants nothing.
    await ecr.set_repository_policy(repositoryName=repo, policyText=policy(
        {"Effect": "Allow", "Principal": "*", "Action": "ecr:ListImages"},
        {"Effect": "Allow", "Principal": "*", "Action": "ecr:DescribeImages",
         "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-example"}}},
        {"Effect": "Deny", "Principal": "*", "Action": "ecr:ListImages",
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}}))
    for action, call in (("ListImages", other.list_images(repositoryName=repo)),
                         ("DescribeImages", other.describe_images(repositoryName=repo))):
        assert (await refusal(call))["Code"] == "AccessDeniedException", action


async def test_wildcard_actions_and_an_account_principal(
        ecr: Any, other: Any, other_key: str, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    layer = os.urandom(200)
    await push_image(ecr, repo, "v1", layers=[layer])
    await ecr.set_repository_policy(repositoryName=repo, policyText=policy(
        {"Effect": "Allow", "Principal": {"AWS": OTHER_ACCOUNT}, "Action": "ecr:Batch*"}))
    got = await other.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])
    assert len(got["images"]) == 1
    await other.batch_check_layer_availability(repositoryName=repo,
                                               layerDigests=[digest(layer)])
    error = await refusal(other.get_download_url_for_layer(repositoryName=repo,
                                                           layerDigest=digest(layer)))
    assert error["Message"] == no_policy(other_key, "GetDownloadUrlForLayer", repo)
    # ecr:Batch* covers BatchDeleteImage too: a grant is as wide as its pattern.
    deleted = await other.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])
    assert [i["imageTag"] for i in deleted["imageIds"]] == ["v1"]


async def test_brackets_in_a_policy_are_literal_as_in_iam(
        ecr: Any, other: Any, other_key: str, repo: str) -> None:
    """IAM's wildcards are ``*`` and ``?``: ``ecr:Batch[GC]*`` names no action (the emulator
    read it as a character class, and so granted BatchGetImage where AWS grants nothing)."""
    await ecr.create_repository(repositoryName=repo)
    await push_image(ecr, repo, "v1", layers=[os.urandom(200)])
    await ecr.set_repository_policy(repositoryName=repo, policyText=policy(
        {"Effect": "Allow", "Principal": {"AWS": OTHER_ACCOUNT}, "Action": "ecr:Batch[GC]*"}))
    error = await refusal(other.batch_get_image(repositoryName=repo,
                                                imageIds=[{"imageTag": "v1"}]))
    assert error["Message"] == no_policy(other_key, "BatchGetImage", repo)


async def test_a_foreign_push_needs_the_push_actions(
        ecr: Any, other: Any, other_key: str, repo: str,
        extra_emulator: EmulatorProcess) -> None:
    await ecr.create_repository(repositoryName=repo)
    await ecr.set_repository_policy(repositoryName=repo, policyText=policy(
        {"Effect": "Allow", "Principal": {"AWS": user(OTHER_ACCOUNT, other_key)},
         "Action": PULL}))
    error = await refusal(push_image(other, repo, "v1"))
    assert error["Message"] == no_policy(other_key, "InitiateLayerUpload", repo)

    await ecr.set_repository_policy(repositoryName=repo, policyText=policy(
        {"Effect": "Allow", "Principal": {"AWS": user(OTHER_ACCOUNT, other_key)},
         "Action": PULL + PUSH}))
    # Two parts, streamed into A's upload as they arrive.
    layer = os.urandom(5 * 1024 * 1024 + 100)
    assert await push_layer(other, repo, layer, part_size=5 * 1024 * 1024) == digest(layer)
    image, text = await push_image(other, repo, "v1", layers=[layer])
    got = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])
    assert got["images"][0]["imageManifest"] == text
    assert got["images"][0]["imageId"]["imageDigest"] == image
    with pytest.raises(other.client.exceptions.RepositoryNotFoundException):
        await other.client.describe_repositories(repositoryNames=[repo])
    parts = [e for e in extra_emulator.requests("UploadLayerPart") if e["repository"] == repo]
    assert [e["outcome"] for e in parts] == ["ok"] * 3  # the layer's two, the config's


async def test_identity_rules_of_the_caller_still_apply(
        ecr: Any, other: Any, other_key: str, repo: str,
        extra_emulator: EmulatorProcess, rules: None) -> None:
    """IAM needs both: the resource policy of A and the identity policy of B."""
    await ecr.create_repository(repositoryName=repo)
    await push_image(ecr, repo, "v1")
    await ecr.set_repository_policy(repositoryName=repo, policyText=policy(
        {"Effect": "Allow", "Principal": {"AWS": OTHER_ACCOUNT}, "Action": "ecr:*"}))
    extra_emulator.control("PUT", "policies", {other_key: [
        {"Effect": "Allow", "Action": "ecr:Describe*"}]})
    error = await refusal(other.list_images(repositoryName=repo))
    assert error["Message"] == denied(
        other_key, "ListImages", repo,
        "because no identity-based policy allows the ecr:ListImages action")
    assert len((await other.describe_images(repositoryName=repo))["imageDetails"]) == 1


async def test_the_registry_policy_grants_with_scope_v2(
        ecr: Any, other: Any, other_key: str, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    await push_image(ecr, repo, "v1")
    await ecr.put_registry_policy(policyText=policy({
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:root"},
        "Action": "ecr:ListImages",
        "Resource": f"arn:aws:ecr:{REGION}:{ACCOUNT_ID}:repository/{repo}"}))
    try:
        assert len((await other.list_images(repositoryName=repo))["imageIds"]) == 1
        other_repo = repo + "-b"  # outside the statement's Resource
        await ecr.create_repository(repositoryName=other_repo)
        error = await refusal(other.list_images(repositoryName=other_repo))
        assert error["Message"] == no_policy(other_key, "ListImages", other_repo)
        await ecr.put_account_setting(name="REGISTRY_POLICY_SCOPE", value="V1")
        assert (await refusal(other.list_images(repositoryName=repo)))[
            "Code"] == "AccessDeniedException"
    finally:
        await ecr.put_account_setting(name="REGISTRY_POLICY_SCOPE", value="V2")
        await ecr.delete_registry_policy()


async def test_authorization_tokens_for_another_registry(other: Any) -> None:
    """The model: specifying a registry ID "doesn't change the permissions scope of the
    authorization token", so asking for A's registry is answered, not refused."""
    answer = await other.client.get_authorization_token(registryIds=[ACCOUNT_ID])
    (data,) = answer["authorizationData"]
    assert data["authorizationToken"] and data["proxyEndpoint"].startswith("http")


async def test_registry_ids_that_name_no_repository_stay_on_the_callers_registry(
        ecr: Any, other: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    with pytest.raises(other.client.exceptions.InvalidParameterException):
        await other.create_repository(repositoryName=repo + "-made-by-b")
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        await ecr.describe_repositories(repositoryNames=[repo + "-made-by-b"])
    assert json.dumps((await other.describe_repositories())["repositories"]) == "[]"
