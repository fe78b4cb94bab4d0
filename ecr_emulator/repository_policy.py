"""Repository policies: validated when set, enforced on every call that names the repository.

A repository policy is an IAM resource policy (``SetRepositoryPolicy``). ``parse`` accepts
what ECR accepts and refuses the rest with ECR's message: a JSON object with an optional
``Version`` (2008-10-17 or 2012-10-17) and ``Statement`` (one or a list), each with an
``Effect`` (Allow or Deny), a ``Principal`` or ``NotPrincipal`` (``"*"`` or ``{"AWS": ...}``
etc.), an ``Action`` or ``NotAction`` naming actions of the service (``ecr:*``,
``ecr:BatchGetImage``; ``ecr-public:...`` for ECR Public), and optionally ``Sid``,
``Resource``/``NotResource`` and ``Condition``. The values follow the IAM JSON policy
grammar: ``Id`` and ``Sid`` are strings, and a ``Condition`` maps operators to objects whose
values are a string, number or boolean, or a list of those.

Enforcement covers the identities the emulator knows: a request signed with access key
``K`` is the IAM user ``arn:aws:iam::<account>:user/K`` (see access.py). As in IAM for a
principal of the repository's own account, a call is refused (AccessDeniedException) when
either the identity rules or the repository policy explicitly deny it, and otherwise allowed
when either of them allows it. A statement naming the account itself (``"123456789012"`` or
``arn:aws:iam::123456789012:root``) applies its Deny to every identity of the account, but
its Allow grants nothing by itself: it delegates to the identity rules, as in IAM. A principal
of another account reaches a repository only through these policies (cross_account.py), and
there a statement naming its account does grant. The emulator evaluates no condition keys, so
it assumes the worst of a statement with a ``Condition``: its Allow grants nothing, its Deny
refuses. ``Resource``/``NotResource`` are matched (AWS wildcards, ``*`` and ``?`` only) where
a policy covers several repositories (the registry policy); a repository policy's statements
cover its repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ecr_emulator import access, documents, wildcards
from ecr_emulator.access import Decision
from ecr_emulator.errors import AwsError
from ecr_emulator.state import EmulatorState

VERSIONS = ("2008-10-17", "2012-10-17")
_STATEMENT_KEYS = {"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction",
                   "Resource", "NotResource", "Condition"}


def invalid_policy(detail: str) -> AwsError:
    return AwsError("InvalidParameterException",
                    "Invalid parameter at 'PolicyText' failed to satisfy constraint: "
                    f"'Invalid repository policy provided: {detail}'")


@dataclass(frozen=True)
class Statement:
    effect: str
    principals: tuple[str, ...] | None  # None: "*"
    not_principal: bool
    actions: tuple[str, ...]
    not_action: bool
    conditional: bool
    resources: tuple[str, ...] | None = None  # None: every resource
    not_resource: bool = False

    def covers_action(self, qualified: str) -> bool:
        hit = any(pattern == "*" or wildcards.matches(qualified.lower(), pattern.lower())
                  for pattern in self.actions)
        return hit != self.not_action

    def covers_resource(self, arn: str | None) -> bool:
        if arn is None or self.resources is None:
            return True
        hit = any(wildcards.matches(arn, pattern) for pattern in self.resources)
        return hit != self.not_resource

    def names(self, principal: str, account_id: str) -> str | None:
        """"user" if it names this identity (or everyone), "account" if only its account."""
        if self.principals is None:
            found: str | None = "user"
        elif principal in self.principals:
            found = "user"
        elif account_id in self.principals or f"arn:aws:iam::{account_id}:root" in \
                self.principals:
            found = "account"
        else:
            found = None
        if self.not_principal:
            return None if found else "user"
        return found


@dataclass(frozen=True)
class RepositoryPolicy:
    statements: tuple[Statement, ...]

    def decide(self, principal: str, account_id: str, qualified_action: str, *,
               resource: str | None = None, account_grants: bool = False) -> Decision:
        """This policy's verdict on ``principal`` (of ``account_id``) performing the action
        on ``resource``; ``account_grants``: an Allow naming the account grants (the
        principal is of another account than the policy's)."""
        denied = allowed = False
        for statement in self.statements:
            if not (statement.covers_action(qualified_action)
                    and statement.covers_resource(resource)):
                continue
            named = statement.names(principal, account_id)
            if named is None:
                continue
            if statement.effect == "Deny":
                denied = True  # a Condition may hold: the worst is assumed
            elif not statement.conditional and (named == "user" or account_grants):
                allowed = True
        return "deny" if denied else "allow" if allowed else "none"


def parse(text: str, service: str = "ecr") -> RepositoryPolicy:
    """The policy ``text`` describes, or InvalidParameterException saying what is wrong."""
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise invalid_policy("the policy is not valid JSON") from None
    if not isinstance(document, dict):
        raise invalid_policy("the policy must be a JSON object")
    unknown = set(document) - {"Version", "Id", "Statement"}
    if unknown:
        raise invalid_policy(f"unknown element {sorted(unknown)[0]!r}")
    if "Version" in document and document["Version"] not in VERSIONS:
        raise invalid_policy(f"Version must be one of {', '.join(VERSIONS)}")
    if "Id" in document and not isinstance(document["Id"], str):
        raise invalid_policy("Id must be a string")
    raw = document.get("Statement")
    items = [raw] if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items:
        raise invalid_policy("Statement must be an object or a non-empty list of objects")
    return RepositoryPolicy(tuple(_statement(item, i, service) for i, item in enumerate(items)))


def _statement(item: Any, index: int, service: str) -> Statement:
    where = f"Statement[{index}]"
    if not isinstance(item, dict):
        raise invalid_policy(f"{where} must be an object")
    unknown = set(item) - _STATEMENT_KEYS
    if unknown:
        raise invalid_policy(f"{where} has an unknown element {sorted(unknown)[0]!r}")
    if "Sid" in item and not isinstance(item["Sid"], str):
        raise invalid_policy(f"{where}.Sid must be a string")
    if item.get("Effect") not in ("Allow", "Deny"):
        raise invalid_policy(f"{where}.Effect must be Allow or Deny")
    if ("Principal" in item) == ("NotPrincipal" in item):
        raise invalid_policy(f"{where} needs exactly one of Principal and NotPrincipal")
    if ("Action" in item) == ("NotAction" in item):
        raise invalid_policy(f"{where} needs exactly one of Action and NotAction")
    not_principal = "NotPrincipal" in item
    principals = _principals(item["NotPrincipal" if not_principal else "Principal"], where)
    not_action = "NotAction" in item
    actions = _strings(item["NotAction" if not_action else "Action"], f"{where}.Action")
    for action in actions:
        prefix, _, name = action.partition(":")
        if action != "*" and (prefix.lower() != service or not name):
            raise invalid_policy(f"{where}: {action!r} is not an action of {service}")
    condition = item.get("Condition")
    if condition is not None:
        _condition(condition, f"{where}.Condition")
    not_resource = "NotResource" in item
    resources = (_strings(item["NotResource" if not_resource else "Resource"],
                          f"{where}.Resource")
                 if not_resource or "Resource" in item else None)
    return Statement(item["Effect"], principals, not_principal, actions, not_action,
                     bool(condition), resources, not_resource)


def _condition(value: Any, where: str) -> None:
    """IAM's condition block: ``{operator: {key: value or [value, ...]}}``, each value a
    string, number or boolean (nested arrays or objects are no condition values)."""
    if not isinstance(value, dict):
        raise invalid_policy(f"{where} must be an object")
    for operator, keys in value.items():
        if not isinstance(keys, dict):
            raise invalid_policy(f"{where}.{operator} must be an object of condition keys")
        for key, values in keys.items():
            items = values if isinstance(values, list) else [values]
            if not all(isinstance(v, str | int | float) for v in items):
                raise invalid_policy(f"{where}.{operator}.{key} must be a string, number or "
                                     "boolean, or a list of them")


def _principals(value: Any, where: str) -> tuple[str, ...] | None:
    if value == "*":
        return None
    if not isinstance(value, dict) or not value:
        raise invalid_policy(f"{where}.Principal must be \"*\" or an object such as "
                             "{\"AWS\": [...]}")
    found: list[str] = []
    for kind, names in value.items():
        if kind not in ("AWS", "Service", "Federated", "CanonicalUser"):
            raise invalid_policy(f"{where}.Principal has an unknown kind {kind!r}")
        for name in _strings(names, f"{where}.Principal.{kind}"):
            if kind == "AWS" and name == "*":
                return None
            found.append(name)
    return tuple(found)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(
            isinstance(i, str) and i for i in items):
        raise invalid_policy(f"{where} must be a string or a non-empty list of strings")
    return tuple(items)


async def authorize(state: EmulatorState, service: str, access_key_id: str, action: str,
                    params: dict[str, Any], decision: Decision, *, region: str) -> None:
    """Combine the identity rules' ``decision`` with the policies of the repositories the
    call names; raise AccessDeniedException if the call may not proceed."""
    account_id = state.account_id
    names = list(dict.fromkeys(access.repositories_named(params)))
    registry = params.get("registryId")  # ECR Public's alias is already the account's id
    if registry not in (None, account_id):
        names = []  # another registry's repository: this registry's policies do not apply
    principal = access.principal_arn(account_id, access_key_id)
    verdicts: list[Decision] = []
    for name in names:
        stored = await state.db.read(documents.get, name, documents.POLICY)
        if stored is None:
            verdicts.append("none")
            continue
        policy = parse(stored["text"], service)
        verdicts.append(policy.decide(principal, account_id, f"{service}:{action}"))
        if verdicts[-1] == "deny":
            raise access.access_denied(
                access_key_id, action, account_id=account_id,
                resource=access.repository_arn(service, account_id, region, name),
                why="with an explicit deny in a resource-based policy", service=service)
    if decision == "allow" or (verdicts and all(v == "allow" for v in verdicts)):
        return
    raise access.identity_denied(access_key_id, action, params, decision,
                                 account_id=account_id, region=region, service=service)
