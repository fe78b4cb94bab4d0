"""UpdateImageStorageClass: archive an image or restore it.

An archived image stays listed and described (imageStatus ARCHIVED) but cannot be pulled:
BatchGetImage reports it as an ImageNotFound failure, as ECR answers a pull of an archived
image with 404. Restoring answers ACTIVATING and the image is pullable again at once (ECR
takes minutes to hours). An image an index of the repository references is archived and
restored with its index only (ImageStorageClassUpdateNotSupportedException).
"""

from __future__ import annotations

import sqlite3
import time

from ecr_emulator import image_states
from ecr_emulator.errors import AwsError
from ecr_emulator.protocol import Call, Json, action


@action("UpdateImageStorageClass")
async def update_image_storage_class(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = state.registry_id(params)
    repository, asked = params["repositoryName"], params["imageId"]
    target = params["targetStorageClass"]
    now = time.time()

    def update(db: sqlite3.Connection) -> tuple[image_states.Image, str]:
        image = image_states.existing_image(db, repository, registry_id, asked)
        current = image_states.storage_class(db, image.id)
        if db.execute(
                "SELECT 1 FROM image_refs r JOIN images i ON i.id = r.image_id WHERE"
                " r.target = ? AND r.kind = 'manifest' AND i.repository = ? LIMIT 1",
                (image.digest, repository)).fetchone():
            raise AwsError("ImageStorageClassUpdateNotSupportedException",
                           "An image that an image index references changes storage class "
                           "with its index")
        if target == current:
            return image, "ARCHIVED" if target == "ARCHIVE" else "ACTIVE"
        image_states.set_with_children(db, repository, image.id, target, now)
        return image, "ARCHIVED" if target == "ARCHIVE" else "ACTIVATING"

    image, status = await state.db.write(update)
    image_id: Json = {"imageDigest": image.digest}
    if asked.get("imageTag"):
        image_id["imageTag"] = asked["imageTag"]
    return {"registryId": registry_id, "repositoryName": repository, "imageId": image_id,
            "imageStatus": status}
