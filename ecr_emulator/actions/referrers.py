"""ListImageReferrers: the images of a repository whose manifest names a given ``subject``.

A referrer's artifactStatus is its storage class: ACTIVE, or ARCHIVED once archived
(UpdateImageStorageClass, a lifecycle transition); a restore is immediate here, so nothing
is ever ACTIVATING. The filter's artifactStatus (default ACTIVE, or ANY) selects them. In a
pull through cache repository the referrers the upstream has and the repository lacks are
fetched first (pull_through.import_referrers).
"""

from __future__ import annotations

from ecr_emulator import image_states, image_store, paging, store
from ecr_emulator.actions import pull_through
from ecr_emulator.image_store import Image
from ecr_emulator.protocol import Call, Json, action
from ecr_emulator.validation import digest_error, is_image_digest

DEFAULT_PAGE = 20  # "If this parameter is not used, then ListImageReferrers returns up to 20"


_STORAGE = {"ACTIVE": "STANDARD", "ARCHIVED": "ARCHIVE", "ANY": None}


def _referrer(image: Image, archived: bool) -> Json:
    entry: Json = {"digest": image.digest, "mediaType": image.media_type,
                   "size": image.manifest_size,
                   "artifactStatus": "ARCHIVED" if archived else "ACTIVE"}
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
        raise digest_error("subjectId.imageDigest")
    filters = params.get("filter") or {}
    after = paging.decode("ListImageReferrers", params.get("nextToken"), 0)
    limit = paging.page_size(params, DEFAULT_PAGE)
    await state.db.read(store.get_repository, repository, registry_id)
    status = filters.get("artifactStatus", "ACTIVE")
    if status not in _STORAGE:  # ACTIVATING: restores are immediate here
        return {"referrers": []}
    if after == 0:
        await pull_through.import_referrers(state, repository, subject, registry_id)
    page = await state.db.read(image_store.referrers, repository, subject,
                               list(filters.get("artifactTypes") or []), int(after), limit + 1,
                               _STORAGE[status])
    archived = await state.db.read(image_states.archived, [image.id for image in page])
    result: Json = {"referrers": [_referrer(image, image.id in archived)
                                  for image in page[:limit]]}
    if len(page) > limit:
        result["nextToken"] = paging.encode("ListImageReferrers", page[limit - 1].id)
    return result
