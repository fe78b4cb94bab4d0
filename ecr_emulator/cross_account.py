"""Calls on another account's repositories: ``registryId`` naming an account that is not the
caller's.

As in ECR, a principal of account B may act on a repository of account A (in the region its
signature names) only when a resource-based policy of A allows it: the repository's policy
(SetRepositoryPolicy) or, with the account setting REGISTRY_POLICY_SCOPE V2 (the default),
A's registry policy, whose statements' ``Resource`` must cover the repository's ARN. Such
a statement names B's user (``arn:aws:iam::B:user/<key>``), B itself (``"B"``,
``arn:aws:iam::B:root``: granting to B, which delegates to B's identity rules) or ``"*"``,
for the action (``ecr:BatchGetImage``, ``ecr:Batch*``, ``ecr:*``…). IAM also needs B's own
identity rules (access.py) to allow the call. An explicit Deny in any of them refuses it.
Everything else is AccessDeniedException, as AWS answers: a repository without a policy,
one that does not exist, an account that has no registry here, so nothing tells B what A
holds. Calls that name no repository, and CreateRepository, stay on B's registry.
"""

from __future__ import annotations

from typing import Any

from ecr_emulator import access, documents, repository_policy
from ecr_emulator import registry_documents as registry
from ecr_emulator.access import Decision
from ecr_emulator.errors import AwsError
from ecr_emulator.state import EmulatorState

REGISTRY_POLICY_SCOPE = "REGISTRY_POLICY_SCOPE"  # account setting: V2 (default) or V1
NOT_ACROSS = {"CreateRepository"}  # repositories are only made in the caller's registry


def foreign_account(action: str, params: dict[str, Any], caller_account: str) -> str | None:
    """The other account whose repositories the call names, or None."""
    registry_id = params.get("registryId")
    if (not isinstance(registry_id, str) or registry_id == caller_account
            or action in NOT_ACROSS or "resourceArn" in params):
        return None
    return registry_id if access.repositories_named(params) else None


def refused(access_key_id: str, action: str, *, caller_account: str, resource: str,
            why: str) -> AwsError:
    return access.access_denied(access_key_id, action, account_id=caller_account,
                                resource=resource, why=why)


async def authorize(state: EmulatorState | None, access_key_id: str, action: str,
                    params: dict[str, Any], decision: Decision, *, caller_account: str,
                    account_id: str, region: str) -> None:
    """Raise AccessDeniedException unless ``state`` (account ``account_id``'s registry in
    ``region``, None if it has none) lets the caller do ``action`` on every repository
    the call names, and the caller's identity rules (``decision``) allow it too."""
    principal = access.principal_arn(caller_account, access_key_id)
    qualified = f"ecr:{action}"
    policies = await _registry_policy(state)
    for name in dict.fromkeys(access.repositories_named(params)):
        arn = access.repository_arn("ecr", account_id, region, name)
        verdicts: list[Decision] = []
        stored = (await state.db.read(documents.get, name, documents.POLICY)
                  if state is not None else None)
        if stored is not None:
            verdicts.append(repository_policy.parse(stored["text"]).decide(
                principal, caller_account, qualified, account_grants=True))
        verdicts += [policy.decide(principal, caller_account, qualified, resource=arn,
                                   account_grants=True) for policy in policies]
        if "deny" in verdicts:
            raise refused(access_key_id, action, caller_account=caller_account, resource=arn,
                          why="with an explicit deny in a resource-based policy")
        if decision != "allow":
            raise access.identity_denied(access_key_id, action, params, decision,
                                         account_id=caller_account, region=region)
        if "allow" not in verdicts:
            raise refused(access_key_id, action, caller_account=caller_account, resource=arn,
                          why=f"because no resource-based policy allows the {qualified} action")


async def _registry_policy(state: EmulatorState | None
                           ) -> list[repository_policy.RepositoryPolicy]:
    """The registry policy, where its scope (V2) lets it grant repository actions."""
    if state is None:
        return []
    scope = await state.db.read(registry.get, registry.SETTING, REGISTRY_POLICY_SCOPE)
    text = await state.db.read(registry.get, registry.REGISTRY_POLICY)
    if text is None or (scope or "V2") != "V2":
        return []
    return [repository_policy.parse(text)]
