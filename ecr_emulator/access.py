"""Per-access-key allow/deny rules, so the emulator can play IAM: a call the rules refuse
fails with AccessDeniedException, as ECR answers a principal without the permission.

The rules are a JSON object from access key id to a list of statements, IAM-style:

    {"AKIDALICE": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "team-a/*"},
                   {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"]}],
     "AKIDBOB":   [{"Effect": "Allow", "Action": "*"},
                   {"Effect": "Deny", "Action": ["ecr:PutImage", "ecr:InitiateLayerUpload"]}],
     "*":         [...]}

``Action`` and ``Resource`` are a string or a list of AWS wildcard patterns (``*``, ``?``);
actions are written ``ecr:Name`` or ``ecr-public:Name`` (or ``*``); resources are repository
names or repository ARNs, and a statement without ``Resource`` covers every call. A call naming
repositories is covered when each of them matches; a call naming none
(GetAuthorizationToken, DescribeRepositories without names) only by ``*`` or no Resource.
As in IAM an explicit Deny wins, then an Allow; nothing matching means denied. Keys not in
the object use the ``"*"`` entry; with neither, the key may do everything (so an emulator
without rules behaves as before). ``decide`` gives the identity-based verdict on its own,
which repository policies (repository_policy.py) then combine with, as IAM combines
identity and resource policies.

Rules come from ``ecr-gateway emulator --policy-file FILE`` or at run time from
``PUT /_emulator/policies`` (the whole object; ``GET`` shows it, ``DELETE`` clears it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from ecr_emulator import wildcards
from ecr_emulator.control import read_json
from ecr_emulator.errors import AwsError


@dataclass(frozen=True)
class Statement:
    effect: str  # "Allow" or "Deny"
    actions: tuple[str, ...]
    resources: tuple[str, ...] | None  # None: every call

    def covers_action(self, action: str, service: str = "ecr") -> bool:
        return any(wildcards.matches(f"{service}:{action}", pattern) or pattern == "*"
                   for pattern in self.actions)

    def covers_resources(self, names: list[str], arns: list[str], *, every: bool) -> bool:
        if self.resources is None:
            return True
        if not names:
            return "*" in self.resources
        hits = [any(wildcards.matches(name, p) or wildcards.matches(arn, p)
                    for p in self.resources) for name, arn in zip(names, arns, strict=True)]
        return all(hits) if every else any(hits)


def _patterns(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise ValueError(f"{where} must be a string or a non-empty list of strings")
    return tuple(items)


def parse_policies(document: Any) -> dict[str, list[Statement]]:
    """The rules of a policy document; ValueError naming the first problem."""
    if not isinstance(document, dict):
        raise ValueError("the policy document must be an object of access key id → statements")
    policies: dict[str, list[Statement]] = {}
    for key, statements in document.items():
        if not isinstance(statements, list):
            raise ValueError(f"{key}: must be a list of statements")
        parsed = []
        for i, raw in enumerate(statements):
            where = f"{key}[{i}]"
            if not isinstance(raw, dict):
                raise ValueError(f"{where}: a statement is an object")
            unknown = set(raw) - {"Effect", "Action", "Resource", "Sid"}
            if unknown:
                raise ValueError(f"{where}: unknown field {sorted(unknown)[0]!r}")
            effect = raw.get("Effect")
            if effect not in ("Allow", "Deny"):
                raise ValueError(f"{where}.Effect must be Allow or Deny")
            resources = (_patterns(raw["Resource"], f"{where}.Resource")
                         if "Resource" in raw else None)
            parsed.append(Statement(effect, _patterns(raw.get("Action"), f"{where}.Action"),
                                    resources))
        policies[str(key)] = parsed
    return policies


def repositories_named(params: dict[str, Any]) -> list[str]:
    """The repositories a call is about: repositoryName(s), or the name in a resourceArn."""
    if isinstance(params.get("repositoryName"), str):
        return [params["repositoryName"]]
    names = params.get("repositoryNames")
    if isinstance(names, list):
        return [n for n in names if isinstance(n, str)]
    arn = params.get("resourceArn")
    if isinstance(arn, str) and ":repository/" in arn:
        return [arn.split(":repository/", 1)[1]]
    return []


def repository_arn(service: str, account_id: str, region: str, name: str) -> str:
    if service == "ecr-public":  # ECR Public ARNs carry no region
        return f"arn:aws:ecr-public::{account_id}:repository/{name}"
    return f"arn:aws:ecr:{region}:{account_id}:repository/{name}"


def principal_arn(account_id: str, access_key_id: str) -> str:
    """The IAM identity the emulator takes an access key to be."""
    return f"arn:aws:iam::{account_id}:user/{access_key_id}"


def access_denied(access_key_id: str, action: str, *, account_id: str, resource: str,
                  why: str, service: str = "ecr") -> AwsError:
    return AwsError("AccessDeniedException",
                    f"User: {principal_arn(account_id, access_key_id)} is not authorized to "
                    f"perform: {service}:{action} on resource: {resource} {why}")


Decision = Literal["allow", "deny", "none"]  # "none": no statement allows or denies


class Policies:
    def __init__(self, document: Any = None) -> None:
        self.document: dict[str, Any] = {}
        self._rules: dict[str, list[Statement]] = {}
        if document is not None:
            self.replace(document)

    @classmethod
    def from_file(cls, path: str | Path) -> Policies:
        with open(path, encoding="utf-8") as handle:
            return cls(json.load(handle))

    def replace(self, document: Any) -> None:
        rules = parse_policies(document)
        self.document, self._rules = dict(document), rules

    def decide(self, access_key_id: str, action: str, params: dict[str, Any], *,
               account_id: str, region: str, service: str = "ecr") -> Decision:
        """The key's rules on this call: an explicit deny, an allow, or neither."""
        statements = self._rules.get(access_key_id, self._rules.get("*"))
        if statements is None:
            return "allow"
        names = repositories_named(params)
        registry = params.get("registryId") or account_id
        arns = [repository_arn(service, registry, region, name) for name in names]
        relevant = [s for s in statements if s.covers_action(action, service)]
        if any(s.effect == "Deny" and s.covers_resources(names, arns, every=False)
               for s in relevant):
            return "deny"
        if any(s.effect == "Allow" and s.covers_resources(names, arns, every=True)
               for s in relevant):
            return "allow"
        return "none"

    def check(self, access_key_id: str, action: str, params: dict[str, Any], *,
              account_id: str, region: str, service: str = "ecr") -> None:
        """Raise AccessDeniedException unless the key's rules allow this call."""
        decision = self.decide(access_key_id, action, params, account_id=account_id,
                               region=region, service=service)
        if decision != "allow":
            raise identity_denied(access_key_id, action, params, decision,
                                  account_id=account_id, region=region, service=service)


def identity_denied(access_key_id: str, action: str, params: dict[str, Any],
                    decision: Decision, *, account_id: str, region: str,
                    service: str = "ecr") -> AwsError:
    """The AccessDeniedException for a call the identity-based rules do not allow."""
    names = repositories_named(params)
    registry = params.get("registryId") or account_id
    resource = repository_arn(service, registry, region, names[0]) if names else "*"
    why = ("with an explicit deny in an identity-based policy" if decision == "deny"
           else f"because no identity-based policy allows the {service}:{action} action")
    return access_denied(access_key_id, action, account_id=account_id, resource=resource,
                         why=why, service=service)


POLICIES = web.AppKey("ecr_emulator_policies", Policies)


async def get_policies(request: web.Request) -> web.Response:
    return web.json_response({"policies": request.app[POLICIES].document})


async def put_policies(request: web.Request) -> web.Response:
    try:
        request.app[POLICIES].replace(await read_json(request))
    except ValueError as exc:  # includes malformed JSON
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"policies": request.app[POLICIES].document})


async def clear_policies(request: web.Request) -> web.Response:
    request.app[POLICIES].replace({})
    return web.json_response({"policies": {}})


def add_routes(app: web.Application, policies: Policies | None = None) -> None:
    app[POLICIES] = policies or Policies()
    app.router.add_get("/_emulator/policies", get_policies)
    app.router.add_put("/_emulator/policies", put_policies)
    app.router.add_delete("/_emulator/policies", clear_policies)
