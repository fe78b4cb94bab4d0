"""SetRepositoryPolicy, GetRepositoryPolicy, DeleteRepositoryPolicy (ECR; ECR Public's
registrations in public/actions.py reuse these handlers).

The policy text is validated (repository_policy.parse) and stored byte-exact with the
repository; repository_policy.authorize enforces it on every later call that names the
repository. A policy that would deny its setter SetRepositoryPolicy needs ``force``, as the
reference says ("This prevents accidental repository lockouts").
"""

from __future__ import annotations

import time

from ecr_emulator import access, documents, repository_policy
from ecr_emulator.actions.common import existing_repository
from ecr_emulator.errors import AwsError
from ecr_emulator.protocol import Call, Json, action


def policy_not_found(repository: str, registry_id: str) -> AwsError:
    return AwsError("RepositoryPolicyNotFoundException",
                    f"Repository policy does not exist for the repository with name "
                    f"'{repository}' in the registry with id '{registry_id}'")


def _answer(registry_id: str, repository: str, text: str) -> Json:
    return {"registryId": registry_id, "repositoryName": repository, "policyText": text}


@action("SetRepositoryPolicy")
async def set_repository_policy(call: Call, params: Json) -> Json:
    state = call.state
    registry_id, repository = await existing_repository(call, params)
    text = params["policyText"]
    policy = repository_policy.parse(text, call.service)
    principal = access.principal_arn(state.account_id, call.identity.access_key_id)
    locks_out = policy.decide(principal, state.account_id,
                              f"{call.service}:SetRepositoryPolicy") == "deny"
    if locks_out and not params.get("force"):
        raise AwsError("InvalidParameterException",
                       "Invalid parameter at 'PolicyText' failed to satisfy constraint: "
                       "'The policy would prevent you from setting another policy on this "
                       "repository in the future; set force to apply it anyway'")
    await state.db.write(documents.put, repository, documents.POLICY, {"text": text},
                         time.time(), registry_id=registry_id)
    return _answer(registry_id, repository, text)


@action("GetRepositoryPolicy")
async def get_repository_policy(call: Call, params: Json) -> Json:
    state = call.state
    registry_id, repository = await existing_repository(call, params)
    stored = await state.db.read(documents.get, repository, documents.POLICY)
    if stored is None:
        raise policy_not_found(repository, registry_id)
    return _answer(registry_id, repository, stored["text"])


@action("DeleteRepositoryPolicy")
async def delete_repository_policy(call: Call, params: Json) -> Json:
    state = call.state
    registry_id, repository = await existing_repository(call, params)
    stored = await state.db.write(documents.delete, repository, documents.POLICY)
    if stored is None:
        raise policy_not_found(repository, registry_id)
    return _answer(registry_id, repository, stored["text"])

