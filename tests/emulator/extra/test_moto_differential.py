"""Repository policies, lifecycle policies and resource tags: the same call sequences against
moto 5.2.5 (server mode) and the emulator, compared as a client sees them.

As in tests/emulator/api/test_moto_differential.py, every difference must be listed
in ``KNOWN`` with what moto does and the sentence of the reference that decides for the
emulator: a member's or shape's documentation in botocore's ECR model (checked verbatim), or
the ECR User Guide page that defines the lifecycle policy grammar (``GUIDE``), which is not
part of the model. ``MOTO_GAPS`` lists what moto does not implement at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.emulator.api.differential import (
    Known,
    assert_explained,
    known,
    model_documentation,
    moto_server,
)
from tests.emulator.api.test_moto_differential import Step, observe
from tests.emulator.extra.helpers import keep_last, lifecycle, policy
from tests.support.emulator import ACCOUNT_ID, REGION, EmulatorProcess, ecr_client

GUIDE = "https://docs.aws.amazon.com/AmazonECR/latest/userguide/lifecycle_policy_parameters.html"


KNOWN: dict[str, Known] = {
    "get the lifecycle policy": known(
        {"lastEvaluatedAt"}, "lastEvaluatedAt is the time of the call, though nothing ran",
        "GetLifecyclePolicyResponse.lastEvaluatedAt",
        "The time stamp of the last time that the lifecycle policy was run."),
    "delete the lifecycle policy": known(
        {"lastEvaluatedAt"}, "lastEvaluatedAt is the time of the call, though nothing ran",
        "GetLifecyclePolicyResponse.lastEvaluatedAt",
        "The time stamp of the last time that the lifecycle policy was run."),
    "a tagged rule without prefixes": known(
        {"error", "lifecyclePolicyText", "registryId", "repositoryName"},
        "accepts a tagged rule that selects nothing", GUIDE,
        "If you specify tagged, then you must also specify a tagPrefixList value or a "
        "tagPatternList value."),
    "two rules with one priority": known(
        {"error", "lifecyclePolicyText", "registryId", "repositoryName"},
        "accepts duplicate rule priorities", GUIDE,
        "When you add rules to a lifecycle policy, you must give them each a unique value for "
        "rulePriority."),
    "an any rule before another": known(
        {"error", "lifecyclePolicyText", "registryId", "repositoryName"},
        "accepts a tagStatus any rule that is not the last", GUIDE,
        "A rule with a tagStatus value of any must have the highest value for rulePriority "
        "and be evaluated last."),
    "a policy that locks its setter out": known(
        {"error", "policyText", "registryId", "repositoryName"},
        "sets a policy denying SetRepositoryPolicy without force",
        "SetRepositoryPolicyRequest.force",
        "If the policy you are attempting to set on a repository policy would prevent you "
        "from setting another policy in the future, you must force the SetRepositoryPolicy "
        "operation."),
    "a tag key starting with aws:": known(
        {"error"}, "accepts the reserved aws: prefix", "InvalidTagParameterException",
        "An invalid parameter has been specified."),
    "51 tags": known(
        {"error"}, "accepts more than 50 tags", "TooManyTagsException",
        "The maximum number of tags that can be applied to a repository is 50."),
}

# Actions moto 5.2.5 does not implement; only the emulator's answers are checked for them.
MOTO_GAPS = {"StartLifecyclePolicyPreview", "GetLifecyclePolicyPreview"}


def arn(repo: str) -> str:
    return f"arn:aws:ecr:{REGION}:{ACCOUNT_ID}:repository/{repo}"


def policy_steps(repo: str) -> list[tuple[str, Step]]:
    allow = policy({"Sid": "pull", "Effect": "Allow", "Principal": {"AWS": ACCOUNT_ID},
                    "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]})
    old = json.dumps({"Version": "2008-10-17", "Statement": [
        {"Sid": "all", "Effect": "Allow", "Principal": "*", "Action": "ecr:*"}]})
    lockout = policy({"Effect": "Deny", "Principal": "*", "Action": "ecr:SetRepositoryPolicy"})
    return [
        ("create", lambda e: e.create_repository(repositoryName=repo)),
        ("get the policy of a new repository", lambda e: e.get_repository_policy(
            repositoryName=repo)),
        ("set a policy", lambda e: e.set_repository_policy(repositoryName=repo,
                                                           policyText=allow)),
        ("get it", lambda e: e.get_repository_policy(repositoryName=repo)),
        ("set a 2008-10-17 policy", lambda e: e.set_repository_policy(repositoryName=repo,
                                                                      policyText=old)),
        ("set a policy that is not JSON", lambda e: e.set_repository_policy(
            repositoryName=repo, policyText="{not json")),
        ("set a policy without statements", lambda e: e.set_repository_policy(
            repositoryName=repo, policyText=json.dumps({"Version": "2012-10-17"}))),
        ("delete it", lambda e: e.delete_repository_policy(repositoryName=repo)),
        ("delete it again", lambda e: e.delete_repository_policy(repositoryName=repo)),
        ("set the policy of no repository", lambda e: e.set_repository_policy(
            repositoryName=repo + "-no", policyText=allow)),
        # Last: moto takes it, so the two would hold different policies afterwards.
        ("a policy that locks its setter out", lambda e: e.set_repository_policy(
            repositoryName=repo, policyText=lockout)),
    ]


def lifecycle_steps(repo: str) -> list[tuple[str, Step]]:
    text = lifecycle(keep_last(3, tag_status="tagged", tagPrefixList=["v"]),
                     keep_last(1, priority=2))

    def put(value: str) -> Step:
        return lambda e: e.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=value)

    return [
        ("create", lambda e: e.create_repository(repositoryName=repo)),
        ("get the lifecycle policy of a new repository",
         lambda e: e.get_lifecycle_policy(repositoryName=repo)),
        ("put a lifecycle policy", put(text)),
        ("get the lifecycle policy", lambda e: e.get_lifecycle_policy(repositoryName=repo)),
        ("a policy that is not JSON", put("{" + " " * 120)),
        ("a policy without rules", put(json.dumps({"rulez": []}) + " " * 100)),
        ("an expire count of 0", put(lifecycle(keep_last(0)))),
        ("delete the lifecycle policy", lambda e: e.delete_lifecycle_policy(repositoryName=repo)),
        ("delete it again", lambda e: e.delete_lifecycle_policy(repositoryName=repo)),
        ("put for no repository", lambda e: e.put_lifecycle_policy(
            repositoryName=repo + "-no", lifecyclePolicyText=text)),
        # Last: moto takes these, so the two would hold different policies afterwards.
        ("a tagged rule without prefixes", put(lifecycle(keep_last(1, tag_status="tagged")))),
        ("two rules with one priority", put(lifecycle(
            keep_last(1, tag_status="tagged", tagPrefixList=["a"]),
            keep_last(1, tag_status="tagged", tagPrefixList=["b"])))),
        ("an any rule before another", put(lifecycle(
            keep_last(1), keep_last(1, tag_status="untagged", priority=2)))),
    ]


def tag_steps(repo: str) -> list[tuple[str, Step]]:
    return [
        ("create with a tag", lambda e: e.create_repository(
            repositoryName=repo, tags=[{"Key": "team", "Value": "a"}])),
        ("list", lambda e: e.list_tags_for_resource(resourceArn=arn(repo))),
        ("tag", lambda e: e.tag_resource(resourceArn=arn(repo), tags=[
            {"Key": "team", "Value": "b"}, {"Key": "env", "Value": "prod"}])),
        ("list after tagging", lambda e: e.list_tags_for_resource(resourceArn=arn(repo))),
        ("untag", lambda e: e.untag_resource(resourceArn=arn(repo), tagKeys=["team", "nope"])),
        ("list after untagging", lambda e: e.list_tags_for_resource(resourceArn=arn(repo))),
        ("tags of no repository", lambda e: e.list_tags_for_resource(
            resourceArn=arn(repo + "-no"))),
        # Last: moto takes these, so the two would hold different tags afterwards.
        ("a tag key starting with aws:", lambda e: e.tag_resource(
            resourceArn=arn(repo), tags=[{"Key": "aws:owner", "Value": "x"}])),
        ("51 tags", lambda e: e.tag_resource(resourceArn=arn(repo), tags=[
            {"Key": f"k{i:02}", "Value": "v"} for i in range(51)])),
    ]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
async def clients(moto_url: str, extra_emulator: EmulatorProcess) -> AsyncIterator[
        tuple[Any, Any]]:
    async with ecr_client(moto_url, retries={"total_max_attempts": 1}) as moto, \
            ecr_client(extra_emulator.url, retries={"total_max_attempts": 1}) as emulator:
        yield moto, emulator


async def compare(clients: tuple[Any, Any], steps: list[tuple[str, Step]]) -> None:
    moto_seen, emulator_seen = (await observe(clients[0], steps),
                                await observe(clients[1], steps))
    assert_explained(moto_seen, emulator_seen,
                     {step: entry.paths for step, entry in KNOWN.items()})


async def test_repository_policies(clients: tuple[Any, Any], repo: str) -> None:
    await compare(clients, policy_steps(repo))


async def test_lifecycle_policies(clients: tuple[Any, Any], repo: str) -> None:
    await compare(clients, lifecycle_steps(repo))


async def test_resource_tags(clients: tuple[Any, Any], repo: str) -> None:
    await compare(clients, tag_steps(repo))


async def test_moto_gaps_are_still_gaps(clients: tuple[Any, Any], repo: str) -> None:
    """What moto does not implement (so there is nothing to compare): its answer is an
    error, while the emulator answers."""
    moto, emulator = clients
    text = lifecycle(keep_last(1))
    for client in clients:
        await client.create_repository(repositoryName=repo)
    started = await emulator.start_lifecycle_policy_preview(repositoryName=repo,
                                                            lifecyclePolicyText=text)
    assert started["status"] == "IN_PROGRESS"
    assert (await emulator.get_lifecycle_policy_preview(repositoryName=repo))["status"] == \
        "COMPLETE"
    for action in MOTO_GAPS:
        method = getattr(moto, re.sub(r"(?<!^)([A-Z])", r"_\1", action).lower())
        with pytest.raises(ClientError) as info:  # moto: NotImplementedError, HTTP 500
            await method(repositoryName=repo, **(
                {"lifecyclePolicyText": text} if action.startswith("Start") else {}))
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


def test_known_differences_quote_the_reference() -> None:
    for step, entry in KNOWN.items():
        if entry.where == GUIDE:
            continue  # the user guide is not part of the model; cited by its address
        assert entry.quote in model_documentation(entry.where), (step, entry.where)


def test_known_differences_name_real_steps() -> None:
    steps = {name for make in (policy_steps, lifecycle_steps, tag_steps)
             for name, _ in make("x/y")}
    assert set(KNOWN) <= steps
