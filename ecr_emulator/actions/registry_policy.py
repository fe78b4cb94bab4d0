"""PutRegistryPolicy, GetRegistryPolicy, DeleteRegistryPolicy: the registry's permissions
policy (replication and pull through cache grants), validated as a repository policy is
(``repository_policy.parse``) and stored byte-exact. It is not enforced: only the accounts
it would grant to exist elsewhere.
"""

from __future__ import annotations

import time

from ecr_emulator import registry_documents as registry
from ecr_emulator import repository_policy
from ecr_emulator.errors import AwsError
from ecr_emulator.protocol import Call, Json, action


def _not_found(registry_id: str) -> AwsError:
    return AwsError("RegistryPolicyNotFoundException",
                    f"Registry policy does not exist in the registry with id '{registry_id}'")


@action("PutRegistryPolicy")
async def put_registry_policy(call: Call, params: Json) -> Json:
    state = call.state
    text = params["policyText"]
    repository_policy.parse(text)
    await state.db.write(registry.put, registry.REGISTRY_POLICY, "", text, time.time())
    return {"registryId": state.account_id, "policyText": text}


@action("GetRegistryPolicy")
async def get_registry_policy(call: Call, params: Json) -> Json:
    state = call.state
    text = await state.db.read(registry.get, registry.REGISTRY_POLICY)
    if text is None:
        raise _not_found(state.account_id)
    return {"registryId": state.account_id, "policyText": text}


@action("DeleteRegistryPolicy")
async def delete_registry_policy(call: Call, params: Json) -> Json:
    state = call.state
    text = await state.db.write(registry.delete, registry.REGISTRY_POLICY)
    if text is None:
        raise _not_found(state.account_id)
    return {"registryId": state.account_id, "policyText": text}
