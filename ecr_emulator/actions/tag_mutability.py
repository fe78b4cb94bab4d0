"""PutImageTagMutability: a repository's tag mutability and exclusion filters, as
CreateRepository sets them; later pushes follow the new setting."""

from __future__ import annotations

import orjson

from ecr_emulator.actions.common import existing_repository
from ecr_emulator.actions.repositories import EXCLUSION_MODES
from ecr_emulator.errors import AwsError
from ecr_emulator.protocol import Call, Json, action


@action("PutImageTagMutability")
async def put_image_tag_mutability(call: Call, params: Json) -> Json:
    state = call.state
    mutability = params["imageTagMutability"]
    filters = params.get("imageTagMutabilityExclusionFilters")
    if (mutability in EXCLUSION_MODES) != bool(filters):
        raise AwsError("InvalidParameterException",
                       "Invalid parameter at 'imageTagMutabilityExclusionFilters' failed to "
                       "satisfy constraint: 'exclusion filters are required with, and only "
                       f"allowed with, {' or '.join(EXCLUSION_MODES)}'")
    registry_id, repository = await existing_repository(call, params)
    await state.db.write(lambda db: db.execute(
        "UPDATE repositories SET tag_mutability = ?, mutability_filters = ? WHERE name = ?",
        (mutability, orjson.dumps(filters).decode() if filters else None, repository)))
    answer: Json = {"registryId": registry_id, "repositoryName": repository,
                    "imageTagMutability": mutability}
    if filters:
        answer["imageTagMutabilityExclusionFilters"] = filters
    return answer
