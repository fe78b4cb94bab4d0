"""PutReplicationConfiguration, DescribeRegistry, DescribeImageReplicationStatus.

The configuration is validated (a destination may not be this registry in this region, at
most 25 destinations in all) and stored; DescribeRegistry answers it. Images pushed afterwards
are copied to the destinations (replicator.py); DescribeImageReplicationStatus reports each
copy's outcome (IN_PROGRESS, COMPLETE, or FAILED with a failureCode), and no status for an
image pushed before replication covered it (ECR replicates only content pushed later).
"""

from __future__ import annotations

import sqlite3
import time

from ecr_emulator import image_states, replicator
from ecr_emulator import registry_documents as registry
from ecr_emulator.errors import AwsError
from ecr_emulator.protocol import Call, Json, action

MAX_DESTINATIONS = 25


@action("PutReplicationConfiguration")
async def put_replication_configuration(call: Call, params: Json) -> Json:
    state = call.state
    configuration = params["replicationConfiguration"]
    destinations = [d for rule in configuration["rules"] for d in rule.get("destinations", [])]
    if len(destinations) > MAX_DESTINATIONS:
        raise AwsError("InvalidParameterException",
                       f"Invalid parameter at 'replicationConfiguration' failed to satisfy "
                       f"constraint: 'at most {MAX_DESTINATIONS} destinations'")
    for destination in destinations:
        if (destination.get("region"), destination.get("registryId")) == (
                state.region, state.account_id):
            raise AwsError("InvalidParameterException",
                           "Invalid parameter at 'replicationConfiguration' failed to satisfy "
                           "constraint: 'a destination cannot be the source registry and "
                           "region'")
    await state.db.write(registry.put, registry.REPLICATION, "", configuration, time.time())
    return {"replicationConfiguration": configuration}


@action("DescribeRegistry")
async def describe_registry(call: Call, params: Json) -> Json:
    state = call.state
    stored = await state.db.read(registry.get, registry.REPLICATION)
    return {"registryId": state.account_id,
            "replicationConfiguration": stored or {"rules": []}}


@action("DescribeImageReplicationStatus")
async def describe_image_replication_status(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = state.registry_id(params)
    repository, asked = params["repositoryName"], params["imageId"]

    def read(db: sqlite3.Connection) -> tuple[image_states.Image, list[dict[str, str]]]:
        image = image_states.existing_image(db, repository, registry_id, asked)
        return image, replicator.statuses(db, image.id)

    image, statuses = await state.db.read(read)
    image_id: Json = {"imageDigest": image.digest}
    if asked.get("imageTag"):
        image_id["imageTag"] = asked["imageTag"]
    return {"repositoryName": repository, "imageId": image_id,
            "replicationStatuses": statuses}
