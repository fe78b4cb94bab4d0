"""Input that passes the model's constraints but that an action used to accept and then fail
on (a ServerException later) or answer with an error the action does not declare (which
botocore cannot turn into one of the client's exceptions). Each is refused at once, with
the action's own error."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from ecr_emulator.upstream import Upstream, UpstreamError

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


@pytest.mark.parametrize("url", ["a" * 64 + ".example", "registry..example"])
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
