"""``ecr-gateway iam-policy``: the actions each route needs, and no more."""

from __future__ import annotations

from typing import Any

from gateway.config import load_config
from gateway.tools.iam_policy import PULL, PUSH, policy


def _config(data: dict[str, Any]) -> Any:
    import tempfile

    import yaml

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(data, handle)
    return load_config(handle.name, environ={})


def _by_resource(document: dict[str, Any]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for statement in document["Statement"]:
        resources = statement["Resource"]
        for resource in [resources] if isinstance(resources, str) else resources:
            found.setdefault(resource, set()).update(statement["Action"])
    return found


def test_every_policy_can_get_a_token_and_list_the_catalog() -> None:
    document = policy(_config({}))
    assert document["Version"] == "2012-10-17"
    assert _by_resource(document)["*"] == {"ecr:GetAuthorizationToken",
                                           "ecr:DescribeRepositories"}


def test_pull_only_routes_get_only_pull_actions() -> None:
    document = policy(_config({
        "auth": {"mode": "htpasswd", "htpasswd_file": "/dev/null",
                 "rules": [{"repository": "ci/**", "users": ["robot"],
                            "actions": ["pull", "push"]},
                           {"repository": "**", "anonymous": True, "actions": ["pull"]}]},
        "routes": [{"prefix": "ci", "repository_prefix": "build"},
                   {"prefix": "", "create_on_push": False}]}), account="111122223333")
    actions = _by_resource(document)
    ci = actions["arn:aws:ecr:us-east-1:111122223333:repository/build/*"]
    assert set(PUSH) <= ci and "ecr:CreateRepository" in ci
    assert "ecr:BatchDeleteImage" not in ci  # no rule grants delete there
    everything_else = actions["arn:aws:ecr:us-east-1:111122223333:repository/*"]
    assert everything_else == set(PULL)


def test_create_on_push_adds_create_and_the_template_actions() -> None:
    document = policy(_config({"routes": [
        {"prefix": "a", "repository_prefix": "a", "create_on_push": False},
        {"prefix": "b", "repository_prefix": "b", "region": "eu-west-1",
         "repository": {"tags": {"team": "b"}, "encryption_type": "KMS",
                        "kms_key": "arn:aws:kms:eu-west-1:111122223333:key/k1"}}]}))
    actions = _by_resource(document)
    a = actions["arn:aws:ecr:us-east-1:*:repository/a/*"]
    b = actions["arn:aws:ecr:eu-west-1:*:repository/b/*"]
    assert "ecr:CreateRepository" not in a and set(PUSH) <= a
    assert {"ecr:CreateRepository", "ecr:TagResource"} <= b
    kms = actions["arn:aws:kms:eu-west-1:111122223333:key/k1"]
    assert {"kms:CreateGrant", "kms:DescribeKey"} <= kms
    sids = [s["Sid"] for s in document["Statement"]]
    assert len(sids) == len(set(sids))


def test_mirrors_are_pull_only_and_ecr_hosts_name_their_registry() -> None:
    document = policy(_config({
        "routes": [{"prefix": "", "create_on_push": False}],
        "mirrors": {"docker.io": {"repository_prefix": "docker-hub"},
                    "444455556666.dkr.ecr.eu-central-1.amazonaws.com": {}}}))
    actions = _by_resource(document)
    assert actions["arn:aws:ecr:eu-central-1:444455556666:repository/*"] == set(PULL)
    hub = actions["arn:aws:ecr:us-east-1:*:repository/docker-hub/*"]
    assert set(PULL) <= hub and not set(PUSH) & hub
    assert "ecr:BatchImportUpstreamImage" in hub  # ECR pull-through cache imports on pull
