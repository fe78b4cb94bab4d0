"""Input that passes the model's constraints but that an action used to accept and then fail
on (a ServerException later) or answer with an error the action does not declare (which
botocore cannot turn into one of the client's exceptions). Each is refused at once, with
the action's own error."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from ecr_emulator.protocol import TARGET_PREFIX
from ecr_emulator.upstream import Upstream, UpstreamError
from tests.emulator.extra.helpers import raw_call
from tests.support.emulator import ACCOUNT_ID, EmulatorProcess, ecr_client

# Hosts no connection can be made to: a label over 63 characters, an empty label, a port
# outside 0-65535 or not a number. They were stored, and every use of the rule
# (ValidatePullThroughCacheRule, BatchGetImage of its repositories) was a ServerException.
UNREACHABLE_UPSTREAMS = [
    "a" * 64 + ".example",
    "https://" + "a" * 64 + ".example",
    "registry..example",
    ".example",
    "https://registry.example:99999",
    "http://registry.example:port",
]


@pytest.mark.parametrize("url", UNREACHABLE_UPSTREAMS)
async def test_pull_through_rule_needs_a_reachable_host(ecr: Any, url: str) -> None:
    prefix = f"host{uuid.uuid4().hex[:8]}"
    with pytest.raises(ecr.exceptions.UnsupportedUpstreamRegistryException):
        await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=prefix,
                                                 upstreamRegistryUrl=url)
    with pytest.raises(ecr.exceptions.PullThroughCacheRuleNotFoundException):
        await ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix=prefix)


@pytest.mark.parametrize("url", ["a" * 64 + ".example", "registry..example",
                                 "https://registry.example:99999",
                                 "http://registry.example:port"])
async def test_a_stored_rule_with_such_a_host_is_unreachable(url: str) -> None:
    # A rule stored before the check: its upstream is one that cannot be reached
    # (UpstreamUnavailable, ValidatePullThroughCacheRule's isValid false), not a failure.
    with pytest.raises(UpstreamError) as info:
        await Upstream(url, None).ping()
    assert info.value.kind == "unavailable"


# CreateRepository's tag rules, which templates share; the template actions declare neither
# TooManyTagsException nor InvalidTagParameterException.
BAD_TEMPLATE_TAGS = {
    "51 tags": [{"Key": f"k{i}", "Value": "v"} for i in range(51)],
    "an aws: key": [{"Key": "aws:team", "Value": "x"}],
    "an empty key": [{"Key": "", "Value": "x"}],
    "a key of 129 characters": [{"Key": "k" * 129, "Value": "x"}],
    "a value of 257 characters": [{"Key": "k", "Value": "v" * 257}],
    "a key twice": [{"Key": "k", "Value": "a"}, {"Key": "k", "Value": "b"}],
}


@pytest.mark.parametrize("tags", BAD_TEMPLATE_TAGS.values(), ids=BAD_TEMPLATE_TAGS.keys())
async def test_template_tags_are_invalid_parameters(ecr: Any, tags: list[dict[str, str]]
                                                    ) -> None:
    prefix = f"tpltags{uuid.uuid4().hex[:8]}"
    with pytest.raises(ecr.exceptions.InvalidParameterException) as created:
        await ecr.create_repository_creation_template(prefix=prefix, appliedFor=["REPLICATION"],
                                                      resourceTags=tags)
    assert "resourceTags" in created.value.response["Error"]["Message"]
    await ecr.create_repository_creation_template(prefix=prefix, appliedFor=["REPLICATION"])
    try:
        with pytest.raises(ecr.exceptions.InvalidParameterException):
            await ecr.update_repository_creation_template(prefix=prefix, resourceTags=tags)
        described = await ecr.describe_repository_creation_templates(prefixes=[prefix])
        assert described["repositoryCreationTemplates"][0]["resourceTags"] == []
    finally:
        await ecr.delete_repository_creation_template(prefix=prefix)


def _lifecycle_text(priority: int, count: int) -> str:
    return json.dumps({"rules": [{
        "rulePriority": priority, "description": "a rule whose integers are out of bounds",
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan",
                      "countNumber": count},
        "action": {"type": "expire"}}]})


@pytest.mark.parametrize(("priority", "count"), [(2**63, 1), (1, 2**63), (2**31, 1)],
                         ids=["rulePriority 2**63", "countNumber 2**63", "rulePriority 2**31"])
async def test_lifecycle_integers_past_32_bits_are_refused(ecr: Any, repo: str, priority: int,
                                                           count: int) -> None:
    """They were stored, previewed and applied; ECR's schema reads them as Java ints."""
    text = _lifecycle_text(priority, count)
    await ecr.create_repository(repositoryName=repo)
    for call in (ecr.put_lifecycle_policy, ecr.start_lifecycle_policy_preview):
        with pytest.raises(ecr.exceptions.InvalidParameterException) as info:
            await call(repositoryName=repo, lifecyclePolicyText=text)
        assert "Lifecycle policy validation failure: " in info.value.response["Error"]["Message"]
        assert "maximum: 2147483647" in info.value.response["Error"]["Message"]
    with pytest.raises(ecr.exceptions.LifecyclePolicyNotFoundException):
        await ecr.get_lifecycle_policy(repositoryName=repo)
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        await ecr.create_repository_creation_template(
            prefix=f"lc{uuid.uuid4().hex[:8]}", appliedFor=["CREATE_ON_PUSH"],
            lifecyclePolicy=text)


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


# Members no shape declares, nested past orjson's 254 levels of encoding: stored with the
# document, they made each of these a ServerException (and were answered back otherwise).
UNKNOWN_MEMBERS = {
    "PutReplicationConfiguration": {"replicationConfiguration": {"rules": [{"destinations": [
        {"region": "eu-west-1", "registryId": ACCOUNT_ID, "x": _nested(300)}]}]}},
    "PutRegistryScanningConfiguration": {"scanType": "BASIC", "rules": [
        {"scanFrequency": "SCAN_ON_PUSH", "x": _nested(300),
         "repositoryFilters": [{"filter": "*", "filterType": "WILDCARD"}]}]},
    "CreateRepositoryCreationTemplate": {
        "prefix": "unknown-members", "appliedFor": ["REPLICATION"],
        "encryptionConfiguration": {"encryptionType": "AES256", "x": _nested(300)}},
    "PutImageTagMutability": {
        "repositoryName": "hostile/unknown-members",
        "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
        "imageTagMutabilityExclusionFilters": [
            {"filterType": "WILDCARD", "filter": "latest", "x": _nested(300)}]},
}


async def test_members_no_shape_declares_are_dropped(tmp_path: Path) -> None:
    # An emulator of its own: replication and scanning settings are registry-wide.
    with EmulatorProcess(tmp_path / "ecr") as emulator:
        async with ecr_client(emulator.url, retries={"total_max_attempts": 1}) as ecr:
            await ecr.create_repository(repositoryName="hostile/unknown-members")
        for action, params in UNKNOWN_MEMBERS.items():
            status, answer = await raw_call(emulator.url, TARGET_PREFIX + action,
                                            json.dumps(params).encode())
            assert status == 200, (action, answer)
            assert '"x"' not in json.dumps(answer), action
        async with ecr_client(emulator.url, retries={"total_max_attempts": 1}) as ecr:
            registry = await ecr.describe_registry()
            assert registry["replicationConfiguration"]["rules"][0]["destinations"] == [
                {"region": "eu-west-1", "registryId": ACCOUNT_ID}]
        assert "Traceback" not in emulator.log_path.read_text()
