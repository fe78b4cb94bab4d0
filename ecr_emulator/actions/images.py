"""The image plane: PutImage, BatchGetImage, ListImages, DescribeImages, BatchDeleteImage."""

from __future__ import annotations

import hashlib
import sqlite3
import time

from ecr_emulator import (
    access,
    conversions,
    image_states,
    image_store,
    manifests,
    paging,
    pull_times,
    replicator,
    store,
)
from ecr_emulator.actions import pull_through, scanning, templates
from ecr_emulator.errors import AwsError
from ecr_emulator.image_store import Failure, Image
from ecr_emulator.protocol import Call, Json, action
from ecr_emulator.state import EmulatorState
from ecr_emulator.validation import digest_error, is_image_digest, is_tag, tag_error


def _digest(manifest: str) -> str:
    return "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()


def _image_id(digest: str, tag: str | None) -> Json:
    return {"imageDigest": digest, "imageTag": tag} if tag else {"imageDigest": digest}


@action("PutImage")
async def put_image(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = state.registry_id(params)
    repository, text = params["repositoryName"], params["imageManifest"]
    tag, claimed = params.get("imageTag"), params.get("imageDigest")
    if tag is not None and not is_tag(tag):
        raise tag_error()
    await templates.create_on_push(state, repository, registry_id)
    await state.db.read(store.get_repository, repository, registry_id)
    manifest = manifests.parse(text, params.get("imageManifestMediaType"))
    digest = _digest(text)
    if claimed is not None:
        if not is_image_digest(claimed):
            raise digest_error()
        if claimed != digest:
            raise AwsError("ImageDigestDoesNotMatchException",
                           f"The provided digest '{claimed}' does not match the digest "
                           f"'{digest}' that Amazon ECR calculated for the image manifest")
    await state.db.write(_put_image, repository=repository, registry_id=registry_id,
                         digest=digest, text=text, manifest=manifest, tag=tag, now=time.time(),
                         max_images=state.settings.max_images_per_repository)
    await replicator.after_push(state, repository, digest, tag)
    return {"image": {
        "registryId": registry_id,
        "repositoryName": repository,
        "imageId": _image_id(digest, tag),
        "imageManifest": text,
        "imageManifestMediaType": manifest.media_type,
    }}


def _put_image(db: sqlite3.Connection, *, repository: str, registry_id: str, digest: str,
               text: str, manifest: manifests.Manifest, tag: str | None, now: float,
               max_images: int) -> None:
    """PutImage's transaction: store the image; a re-pushed archived image (an index with
    its children) is active again, as ECR restores it, and a push the repository's or the
    registry's scanning configuration scans on push is scanned."""
    existing = image_store.find_by_digest(db, repository, digest)
    archived = existing is not None and image_states.storage_class(db, existing.id) == "ARCHIVE"
    image_store.put_image(db, repository=repository, registry_id=registry_id, digest=digest,
                          text=text, manifest=manifest, tag=tag, now=now, max_images=max_images,
                          restores=archived)
    image = image_store.find_by_digest(db, repository, digest)
    assert image is not None
    if archived:
        image_states.set_with_children(db, repository, image.id, "STANDARD", now)
    if scanning.scans_on_push(db, store.get_repository(db, repository, registry_id)) and (
            image.artifact_media_type in scanning.IMAGE_CONFIG_TYPES):
        image_states.set_scanned(db, image.id, now)


@action("BatchGetImage")
async def batch_get_image(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = state.registry_id(params)
    repository = params["repositoryName"]
    accepted = params.get("acceptedMediaTypes")
    # A repository under a pull through cache rule first fetches what it lacks.
    upstream = await pull_through.import_images(state, repository, params["imageIds"],
                                                registry_id)
    if upstream and not await state.db.read(store.repository_exists, repository):
        return {"images": [], "failures": [
            {"imageId": i, "failureCode": upstream[pull_through.id_key(i)].code,
             "failureReason": upstream[pull_through.id_key(i)].reason}
            for i in params["imageIds"] if pull_through.id_key(i) in upstream]}
    now = time.time()
    images, failures, moved = await state.db.read(_batch_get, repository, registry_id,
                                                  params["imageIds"], accepted, now)
    if moved:
        principal = access.principal_arn(call.identity.account_id or state.account_id,
                                         call.identity.access_key_id)
        await state.db.write(pull_times.record, moved, principal, now)
    for failure in failures:
        fetched = upstream.get(pull_through.id_key(failure["imageId"]))
        if fetched is not None:
            failure.update(failureCode=fetched.code, failureReason=fetched.reason)
    for entry in images:
        entry["registryId"] = registry_id
        entry["repositoryName"] = repository
    return {"images": images, "failures": failures}


def _batch_get(db: sqlite3.Connection, repository: str, registry_id: str,
               image_ids: list[Json], accepted: list[str] | None,
               now: float) -> tuple[list[Json], list[Json], list[int]]:
    """The images and failures BatchGetImage answers, and the ids of the images whose
    recorded pull time this pull moves.

    Every reference is answered in the request's order, a repeated one again: the model's
    ``images`` are "image objects corresponding to the image references in the request"
    (BatchGetImageResponse.images), as BatchDeleteImage reports a repeat (found deleted:
    ImageNotFound), and moto answers each repeat too."""
    store.get_repository(db, repository, registry_id)
    images: list[Json] = []
    failures: list[Json] = []
    pulled: list[int] = []
    for image_id in image_ids:
        found = image_store.resolve(db, repository, image_id)
        if isinstance(found, Image) and image_states.storage_class(db, found.id) == "ARCHIVE":
            # ECR: "Requests to pull the archived image will fail with a 404 error."
            found = Failure("ImageNotFound", "Requested image is archived; restore it with "
                            "UpdateImageStorageClass to pull it")
        answer = found if isinstance(found, Failure) else _as_accepted(
            db, found, accepted, by_tag="imageDigest" not in image_id)
        if isinstance(answer, Failure):
            failures.append({"imageId": image_id, "failureCode": answer.code,
                             "failureReason": answer.reason})
            continue
        assert isinstance(found, Image)
        text, media_type = answer
        digest = found.digest if media_type == found.media_type else _digest(text)
        images.append({
            "imageId": _image_id(digest, image_id.get("imageTag")),
            "imageManifest": text,
            "imageManifestMediaType": media_type,
        })
        pulled.append(found.id)
    return images, failures, pull_times.stale(db, pulled, now)


def _as_accepted(db: sqlite3.Connection, image: Image, accepted: list[str] | None,
                 by_tag: bool) -> tuple[str, str] | Failure:
    """``image``'s manifest and media type in a format of ``accepted`` (None: any): the one it
    was pushed in, or, asked for by tag, a conversion ECR makes (conversions.py)."""
    text = image_store.manifest_of(db, image.id)
    if accepted is None or image.media_type in accepted:
        return text, image.media_type
    converted = conversions.convert(text, image.media_type, accepted) if by_tag else None
    return converted if converted is not None else conversions.unavailable(image.media_type)


@action("ListImages")
async def list_images(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = state.registry_id(params)
    repository = params["repositoryName"]
    tag_status, image_status = _filters(params)
    after = paging.decode("ListImages", params.get("nextToken"), [0, ""])
    limit = paging.page_size(params, 100)
    await state.db.read(store.get_repository, repository, registry_id)
    if image_status == "ACTIVATING":
        return {"imageIds": []}  # a restored image is active at once here
    rows = await state.db.read(image_store.list_image_ids, repository, tag_status,
                               (int(after[0]), str(after[1])), limit + 1,
                               STORAGE_CLASSES[image_status])
    result: Json = {"imageIds": [_image_id(digest, tag) for _, digest, tag in rows[:limit]]}
    if len(rows) > limit:
        last_id, _, last_tag = rows[limit - 1]
        result["nextToken"] = paging.encode("ListImages", [last_id, last_tag or ""])
    return result


# imageStatus filter -> storage class selected (None: any).
STORAGE_CLASSES: dict[str, str | None] = {"ACTIVE": "STANDARD", "ARCHIVED": "ARCHIVE",
                                          "ANY": None}


def _filters(params: Json) -> tuple[str, str]:
    filters = params.get("filter") or {}
    return filters.get("tagStatus", "ANY"), filters.get("imageStatus", "ACTIVE")


@action("DescribeImages")
async def describe_images(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = state.registry_id(params)
    repository = params["repositoryName"]
    tag_status, image_status = _filters(params)
    if params.get("imageIds") is not None:
        if "maxResults" in params or "nextToken" in params:
            raise AwsError("InvalidParameterException",
                           "maxResults and nextToken cannot be used with imageIds")
        images = await state.db.read(_describe_ids, repository, registry_id,
                                     params["imageIds"])
        return {"imageDetails": await _details(state, repository, images)}
    after = paging.decode("DescribeImages", params.get("nextToken"), 0)
    limit = paging.page_size(params, 100)
    await state.db.read(store.get_repository, repository, registry_id)
    if image_status == "ACTIVATING":
        return {"imageDetails": []}
    page = await state.db.read(image_store.list_images, repository, tag_status, int(after),
                               limit + 1, STORAGE_CLASSES[image_status])
    result: Json = {"imageDetails": await _details(state, repository, page[:limit])}
    if len(page) > limit:
        result["nextToken"] = paging.encode("DescribeImages", page[limit - 1].id)
    return result


def _describe_ids(db: sqlite3.Connection, repository: str, registry_id: str,
                  image_ids: list[Json]) -> list[Image]:
    store.get_repository(db, repository, registry_id)
    images: dict[int, Image] = {}
    for image_id in image_ids:
        found = image_states.resolved(db, repository, registry_id, image_id)
        images.setdefault(found.id, found)
    return list(images.values())


async def _details(state: EmulatorState, repository: str, images: list[Image]) -> list[Json]:
    ids = [i.id for i in images]

    def read(db: sqlite3.Connection) -> tuple[dict[int, list[str]], set[int], dict[int, float],
                                              dict[int, float], dict[int, float]]:
        return (image_store.tags_of(db, ids), image_states.archived(db, ids),
                pull_times.of(db, ids), image_states.last_archived(db, ids),
                image_states.last_restored(db, ids))

    tags, archived, pulled, archived_at, restored_at = await state.db.read(read)
    return [_detail(state, repository, i, tags[i.id], i.id in archived, pulled.get(i.id),
                    archived_at.get(i.id), restored_at.get(i.id)) for i in images]


def _detail(state: EmulatorState, repository: str, image: Image, tags: list[str],
            archived: bool, pulled_at: float | None, archived_at: float | None,
            restored_at: float | None) -> Json:
    detail: Json = {
        "registryId": state.account_id,
        "repositoryName": repository,
        "imageDigest": image.digest,
        "imageSizeInBytes": image.size,
        "imagePushedAt": image.pushed_at,
        "imageManifestMediaType": image.media_type,
        "imageStatus": "ARCHIVED" if archived else "ACTIVE",
    }
    if tags:
        detail["imageTags"] = tags
    if image.artifact_media_type:
        detail["artifactMediaType"] = image.artifact_media_type
    if image.subject:
        detail["subjectManifestDigest"] = image.subject
    if pulled_at is not None:
        detail["lastRecordedPullTime"] = pulled_at
    if archived_at is not None:
        detail["lastArchivedAt"] = archived_at
    if restored_at is not None:
        detail["lastActivatedAt"] = restored_at
    return detail


@action("BatchDeleteImage")
async def batch_delete_image(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = state.registry_id(params)
    deleted, failures = await state.db.write(image_store.batch_delete, params["repositoryName"],
                                             registry_id, params["imageIds"])
    return {"imageIds": deleted, "failures": failures}
