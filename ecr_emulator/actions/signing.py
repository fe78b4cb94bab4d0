"""PutSigningConfiguration, GetSigningConfiguration, DeleteSigningConfiguration,
DescribeImageSigningStatus: the registry's managed-signing rules, validated and stored.
Nothing is signed (there is no AWS Signer here), so an image's signing statuses are
empty.
"""

from __future__ import annotations

import sqlite3
import time

from ecr_emulator import image_states
from ecr_emulator import registry_documents as registry
from ecr_emulator.errors import AwsError
from ecr_emulator.protocol import Call, Json, action


def _not_found(registry_id: str) -> AwsError:
    return AwsError("SigningConfigurationNotFoundException",
                    f"Signing configuration does not exist in the registry with id "
                    f"'{registry_id}'")


@action("PutSigningConfiguration")
async def put_signing_configuration(call: Call, params: Json) -> Json:
    configuration = params["signingConfiguration"]
    await call.state.db.write(registry.put, registry.SIGNING, "", configuration, time.time())
    return {"signingConfiguration": configuration}


@action("GetSigningConfiguration")
async def get_signing_configuration(call: Call, params: Json) -> Json:
    state = call.state
    stored = await state.db.read(registry.get, registry.SIGNING)
    if stored is None:
        raise _not_found(state.account_id)
    return {"registryId": state.account_id, "signingConfiguration": stored}


@action("DeleteSigningConfiguration")
async def delete_signing_configuration(call: Call, params: Json) -> Json:
    state = call.state
    stored = await state.db.write(registry.delete, registry.SIGNING)
    if stored is None:
        raise _not_found(state.account_id)
    return {"registryId": state.account_id, "signingConfiguration": stored}


@action("DescribeImageSigningStatus")
async def describe_image_signing_status(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = state.registry_id(params)
    repository, asked = params["repositoryName"], params["imageId"]

    def read(db: sqlite3.Connection) -> image_states.Image:
        return image_states.existing_image(db, repository, registry_id, asked)

    image = await state.db.read(read)
    image_id: Json = {"imageDigest": image.digest}
    if asked.get("imageTag"):
        image_id["imageTag"] = asked["imageTag"]
    return {"repositoryName": repository, "imageId": image_id, "registryId": registry_id,
            "signingStatuses": []}
