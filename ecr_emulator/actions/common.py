"""The preamble most repository actions of ECR and ECR Public share."""

from __future__ import annotations

from ecr_emulator import store
from ecr_emulator.protocol import Call, Json


async def existing_repository(call: Call, params: Json) -> tuple[str, str]:
    """The registry id and repository name a request names, once the repository is known to
    exist: an unknown registry or repository raises its AwsError here, before any other
    lookup."""
    state = call.state
    registry_id = state.registry_id(params)
    repository = params["repositoryName"]
    await state.db.read(store.get_repository, repository, registry_id)
    return registry_id, repository
