"""ListImageReferrers: the images of a repository whose manifest names a given ``subject``."""

from __future__ import annotations

from ecr_emulator import image_store, paging, store
from ecr_emulator.errors import AwsError
from ecr_emulator.image_store import Image
from ecr_emulator.protocol import Call, Json, action
from ecr_emulator.validation import is_image_digest

DEFAULT_PAGE = 20  # "If this parameter is not used, then ListImageReferrers returns up to 20"


def _referrer(image: Image) -> Json:
    entry: Json = {"digest": image.digest, "mediaType": image.media_type,
                   "size": image.manifest_size, "artifactStatus": "ACTIVE"}
    if image.artifact_type:
        entry["artifactType"] = image.artifact_type
    if image.annotations:
        entry["annotations"] = image.annotations
    return entry


@action("ListImageReferrers")
async def list_image_referrers(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = state.registry_id(params)
    repository = params["repositoryName"]
    subject = params["subjectId"]["imageDigest"]
    if not is_image_digest(subject):
        raise AwsError("InvalidParameterException",
                       f"Invalid parameter at 'subjectId.imageDigest' failed to satisfy "
                       f"constraint: '{subject}' is not a valid digest")
    filters = params.get("filter") or {}
    after = paging.decode("ListImageReferrers", params.get("nextToken")) or 0
    limit = paging.page_size(params, DEFAULT_PAGE)
    await state.db.read(store.get_repository, repository, registry_id)
    if filters.get("artifactStatus", "ACTIVE") not in ("ACTIVE", "ANY"):
        return {"referrers": []}
    page = await state.db.read(image_store.referrers, repository, subject,
                               list(filters.get("artifactTypes") or []), int(after), limit + 1)
    result: Json = {"referrers": [_referrer(image) for image in page[:limit]]}
    if len(page) > limit:
        result["nextToken"] = paging.encode("ListImageReferrers", page[limit - 1].id)
    return result
