"""``ecr-gateway iam-policy --config FILE``: the least-privilege IAM policy (JSON) the
gateway's own identity needs for the configured routes and mirrors.

What a route may need is derived from what clients can do through it:

- every route and mirror: the pull actions (BatchGetImage, GetDownloadUrlForLayer,
  BatchCheckLayerAvailability, ListImages, ListImageReferrers);
- a route through which pushes are possible: the layer upload actions and PutImage;
- a route through which deletes are possible: BatchDeleteImage and DescribeImages (an OCI
  untag can put an image back by digest: PutImage);
- ``create_on_push``: CreateRepository, plus TagResource when the route's repository
  settings set tags, SetRepositoryPolicy / PutLifecyclePolicy when they set those policies,
  and the KMS grant actions when they name a KMS key;
- mirrors (``mirrors:``) are pull-only; a mirror of a non-ECR host (an ECR pull-through
  cache) adds BatchImportUpstreamImage and CreateRepository (the first pull imports);
- GetAuthorizationToken and DescribeRepositories (the catalog) on ``*``;
- ECR Public routes and the ``public.ecr.aws`` mirror: ecr-public:GetAuthorizationToken with
  sts:GetServiceBearerToken (the registry endpoint's token), and the ``ecr-public:`` form of
  the push and delete actions on the route's repositories.

With ``auth.mode: none`` anyone can push and delete, so routes get everything. With
``htpasswd``, a route gets only the actions some access rule can grant on names under its
prefix (a route that only ``pull`` rules reach is pull-only). With ``aws``, clients' own
identities make the calls: the policy is what those identities need.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any

from gateway.config import Config, ConfigError, RouteConfig, load_config

PULL = ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability",
        "ecr:ListImages", "ecr:ListImageReferrers")
PUSH = ("ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload",
        "ecr:PutImage")
DELETE = ("ecr:BatchDeleteImage", "ecr:DescribeImages", "ecr:PutImage")
CREATE = ("ecr:CreateRepository",)
PULL_THROUGH = ("ecr:BatchImportUpstreamImage", "ecr:CreateRepository")
KMS = ("kms:CreateGrant", "kms:RetireGrant", "kms:DescribeKey", "kms:Decrypt",
       "kms:GenerateDataKey")


@dataclass(frozen=True)
class Scope:
    """One ECR resource set: a repository prefix in a registry and region."""

    name: str  # for the statement id
    region: str
    registry_id: str | None
    repository_prefix: str

    def arns(self, account: str) -> list[str]:
        partition = "aws-cn" if self.region.startswith("cn-") else (
            "aws-us-gov" if self.region.startswith("us-gov-") else "aws")
        base = f"arn:{partition}:ecr:{self.region}:{self.registry_id or account}:repository/"
        if not self.repository_prefix:
            return [base + "*"]
        return [base + self.repository_prefix, base + self.repository_prefix + "/*"]


def _literal(pattern: str) -> str:
    """The part of an access-rule pattern before its first wildcard."""
    return re.split(r"[*?\[{]", pattern, maxsplit=1)[0]


def _route_actions(config: Config, route: RouteConfig) -> set[str]:
    """The OCI actions (pull, push, delete) clients can perform through ``route``."""
    if config.auth.mode in ("none", "aws"):
        return {"pull", "push", "delete"}
    granted = {"pull"} if route.anonymous_pull else set()
    prefix = route.prefix
    # Names under a longer route's prefix are that route's, not this one's.
    inner = [r.prefix for r in config.effective_routes()
             if len(r.prefix) > len(prefix) and (not prefix or r.prefix.startswith(prefix + "/"))]
    for rule in config.auth.rules:
        if rule.ecr_repository is not None:  # narrows what name rules grant, adds nothing
            continue
        literal = _literal(rule.repository)
        reaches = (not prefix or literal.startswith(prefix + "/") or literal == prefix
                   or (prefix + "/").startswith(literal))
        if any(literal.startswith(other + "/") for other in inner):
            reaches = False
        if reaches:
            granted.update(a for a in rule.actions if a in ("pull", "push", "delete"))
    return granted or {"pull"}


def policy(config: Config, account: str = "*") -> dict[str, Any]:
    # Neither names a repository: GetAuthorizationToken has no resource, and the catalog's
    # DescribeRepositories lists every repository (IAM evaluates it against "*").
    statements: list[dict[str, Any]] = [{
        "Sid": "RegistryTokenAndCatalog", "Effect": "Allow",
        "Action": ["ecr:GetAuthorizationToken", "ecr:DescribeRepositories"], "Resource": "*"}]
    kms_keys: list[str] = []
    grouped: dict[tuple[str, ...], list[str]] = {}
    names: dict[tuple[str, ...], list[str]] = {}

    def add(actions: set[str], scope: Scope) -> None:
        key = tuple(sorted(actions))
        for arn in scope.arns(account):
            if arn not in grouped.setdefault(key, []):
                grouped[key].append(arn)
        names.setdefault(key, []).append(scope.name)

    public_routes: list[RouteConfig] = []
    for route in config.effective_routes():
        if route.upstream_kind == "ecr-public":
            public_routes.append(route)
            continue
        scope = Scope(f"route '{route.prefix}'", route.region or config.upstream.region,
                      route.registry_id, route.repository_prefix)
        oci = _route_actions(config, route)
        actions = set(PULL)
        if "push" in oci:
            actions.update(PUSH)
            if route.create_on_push:
                actions.update(CREATE)
                if route.repository.tags:
                    actions.add("ecr:TagResource")
                if route.repository.repository_policy is not None:
                    actions.add("ecr:SetRepositoryPolicy")
                if route.repository.lifecycle_policy is not None:
                    actions.add("ecr:PutLifecyclePolicy")
        if "delete" in oci:
            actions.update(DELETE)
        add(actions, scope)
        kms_key = route.repository.kms_key
        if "push" in oci and route.create_on_push and kms_key and kms_key not in kms_keys:
            kms_keys.append(kms_key)
            statements.append({"Sid": f"KmsKey{len(kms_keys)}", "Effect": "Allow",
                               "Action": list(KMS), "Resource": kms_key})
    if public_routes or "public.ecr.aws" in config.mirrors:
        statements += _public_statements(config, public_routes, account)
    for host, mirror in config.mirrors.items():
        if host == "public.ecr.aws":
            continue  # pulled from the registry endpoint with the token above
        region, registry_id = _mirror_target(host, mirror.region, mirror.registry_id, config)
        actions = set(PULL)
        if not _ECR_HOST.match(host):  # an ECR pull-through cache imports on first pull
            actions.update(PULL_THROUGH)
        add(actions, Scope(f"mirror {host}", region, registry_id, mirror.repository_prefix))
    used: set[str] = set()
    for key, arns in grouped.items():
        sid = _sid(key)
        number = 1
        while f"{sid}{number if number > 1 else ''}" in used:
            number += 1
        sid = f"{sid}{number if number > 1 else ''}"
        used.add(sid)
        statements.append({"Sid": sid, "Effect": "Allow", "Action": list(key),
                           "Resource": arns})
    return {"Version": "2012-10-17", "Statement": statements}


def _public_statements(config: Config, routes: list[RouteConfig],
                       account: str) -> list[dict[str, Any]]:
    """ECR Public: the token for its registry endpoint (pulls), and per route the actions
    its pushes and deletes use on its repositories."""
    registry = ["ecr-public:GetAuthorizationToken", "sts:GetServiceBearerToken"]
    if routes:
        registry += ["ecr-public:DescribeRegistries", "ecr-public:DescribeRepositories"]
    statements: list[dict[str, Any]] = [{"Sid": "EcrPublicToken", "Effect": "Allow",
                                         "Action": registry, "Resource": "*"}]
    for index, route in enumerate(routes, 1):
        oci = _route_actions(config, route)
        actions = {"ecr-public:BatchCheckLayerAvailability"}
        if "push" in oci:
            actions.update(a.replace("ecr:", "ecr-public:") for a in PUSH)
            if route.catalog_data == "from_annotations":
                actions.add("ecr-public:PutRepositoryCatalogData")
            if route.create_on_push:
                actions.add("ecr-public:CreateRepository")
                if route.repository.tags:
                    actions.add("ecr-public:TagResource")
                if route.repository.repository_policy is not None:
                    actions.add("ecr-public:SetRepositoryPolicy")
        if "delete" in oci:
            actions.update(a.replace("ecr:", "ecr-public:") for a in DELETE)
        base = f"arn:aws:ecr-public::{route.registry_id or account}:repository/"
        prefix = route.repository_prefix
        arns = [base + "*"] if not prefix else [base + prefix, base + prefix + "/*"]
        statements.append({"Sid": f"EcrPublicRoute{index}", "Effect": "Allow",
                           "Action": sorted(actions), "Resource": arns})
    return statements


_ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


def _mirror_target(host: str, region: str | None, registry_id: str | None,
                   config: Config) -> tuple[str, str | None]:
    match = _ECR_HOST.match(host)
    if match:
        return region or match[2], registry_id or match[1]
    return region or config.upstream.region, registry_id


def _sid(actions: tuple[str, ...]) -> str:
    """A statement id naming what the statement allows: Pull, PullPush, PullPushCreate…"""
    kinds = [("Pull", PULL), ("Push", PUSH), ("Delete", ("ecr:BatchDeleteImage",)),
             ("Create", CREATE), ("PullThrough", PULL_THROUGH)]
    return "".join(name for name, needs in kinds if set(needs) <= set(actions)) or "Access"


def run(path: str | None, account: str = "*") -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{exc.where or path}: invalid: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(policy(config, account), indent=2))
    return 0
