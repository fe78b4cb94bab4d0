"""The configuration of ECR Public routes and of create_on_push's repository template:
mistakes are refused at start, with the key's path and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Config, ConfigError, load_config
from gateway.ecr.routing import Router


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(str(path), environ={})


@pytest.mark.parametrize(("text", "key", "reason"), [
    ("routes:\n  - {prefix: p, upstream_kind: gcr}\n", "routes[0].upstream_kind",
     "must be one of ecr, ecr-public"),
    ("routes:\n  - {prefix: p, catalog_data: from_annotations}\n", "routes[0].catalog_data",
     "ECR Public's"),
    ("routes:\n  - {prefix: p, registry_url: 'http://x'}\n", "routes[0].registry_url",
     "only for upstream_kind: ecr-public"),
    ("routes:\n  - {prefix: p, upstream_kind: ecr-public, region: eu-west-1}\n",
     "routes[0].region", "us-east-1 only"),
    ("routes:\n  - prefix: p\n    upstream_kind: ecr-public\n    repository:\n"
     "      lifecycle_policy: {rules: []}\n", "routes[0].repository.lifecycle_policy",
     "no lifecycle policies"),
    ("routes:\n  - prefix: p\n    repository:\n      lifecycle_policy: {rules: []}\n",
     "routes[0].repository.lifecycle_policy", "rules must be a non-empty array"),
    ("routes:\n  - prefix: p\n    repository:\n      lifecycle_policy: '{not json'\n",
     "routes[0].repository.lifecycle_policy", "is not JSON"),
    ("routes:\n  - prefix: p\n    repository:\n      repository_policy: [1]\n",
     "routes[0].repository.repository_policy", "must be a mapping"),
    ("mirrors:\n  docker.io: {registry_url: 'http://x'}\n", "mirrors.docker.io.registry_url",
     "only for public.ecr.aws"),
    # The endpoint gets the ECR Public password, which pushes to the account's registry:
    # never in clear across a network, never with credentials of its own in the URL.
    ("routes:\n  - {prefix: p, upstream_kind: ecr-public, "
     "registry_url: 'http://registry.example.com'}\n", "routes[0].registry_url",
     "http:// only for a loopback registry"),
    ("routes:\n  - {prefix: p, upstream_kind: ecr-public, "
     "registry_url: 'https://AWS:secret@public.example.com'}\n", "routes[0].registry_url",
     "credentials go in"),
    ("mirrors:\n  public.ecr.aws: {registry_url: 'http://public.example.com'}\n",
     "mirrors.public.ecr.aws.registry_url", "http:// only for a loopback registry"),
    # A prefix no name can start with would send its names to the catch-all (here ECR
    # Public: a push meant for a private route published).
    ("routes:\n  - {prefix: '', upstream_kind: ecr-public}\n  - {prefix: Internal}\n",
     "routes[1].prefix", "no repository name starts with it"),
    ("routes:\n  - {prefix: 'team//ci'}\n", "routes[0].prefix",
     "no repository name starts with it"),
])
def test_mistakes_are_refused(tmp_path: Path, text: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert info.value.key == key and reason in info.value.reason


def test_an_ecr_public_route_and_mirror(tmp_path: Path) -> None:
    config = load(tmp_path, (
        "routes:\n"
        "  - prefix: pub\n    upstream_kind: ecr-public\n    catalog_data: from_annotations\n"
        "    repository:\n      repository_policy: {Version: '2012-10-17', Statement: []}\n"
        "  - prefix: ''\n    region: eu-west-1\n"
        "    repository:\n      lifecycle_policy: |\n"
        '        {"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any",\n'
        '          "countType": "imageCountMoreThan", "countNumber": 3},\n'
        '          "action": {"type": "expire"}}]}\n'
        "mirrors:\n  public.ecr.aws: {registry_url: 'http://127.0.0.1:1'}\n"))
    router = Router.from_config(config)
    public = router.resolve("pub/app")
    assert public is not None and public.route.upstream_kind == "ecr-public"
    assert public.region == "us-east-1" and public.repository == "app"
    assert public.route.repository.policy_text() == (
        '{\n  "Version": "2012-10-17",\n  "Statement": []\n}')
    private = router.resolve("team/app")
    assert private is not None and private.region == "eu-west-1"
    assert private.key != public.key and private.route.repository.lifecycle_text()
    mirrored = router.resolve("nginx/nginx", "public.ecr.aws")
    assert mirrored is not None and mirrored.route.registry_alias == ""
    assert mirrored.route.registry_url == "http://127.0.0.1:1"
    assert mirrored.route.create_on_push is False
