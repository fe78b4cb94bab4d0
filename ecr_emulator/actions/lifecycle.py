"""PutLifecyclePolicy, GetLifecyclePolicy, DeleteLifecyclePolicy, StartLifecyclePolicyPreview,
GetLifecyclePolicyPreview.

The policy text is validated by lifecycle_policy.parse (InvalidParameterException with ECR's
"Lifecycle policy validation failure: ..." message) and stored byte-exact. A preview
evaluates the rules against the repository's images when it starts and lists exactly the
images they would expire or transition to the archive storage class, each with the rule and
its action; it reports IN_PROGRESS for
``lifecycle_preview_seconds`` (default 0), then COMPLETE. expiry.py applies stored policies.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from ecr_emulator import documents, expiry, image_store, paging, store
from ecr_emulator.actions.common import existing_repository
from ecr_emulator.errors import AwsError
from ecr_emulator.image_store import Failure
from ecr_emulator.protocol import Call, Json, action
from ecr_model import lifecycle_policy

DEFAULT_PAGE = 100


def _rules(text: str) -> list[lifecycle_policy.Rule]:
    try:
        return lifecycle_policy.parse(text)
    except lifecycle_policy.PolicyError as exc:
        raise AwsError("InvalidParameterException",
                       f"Invalid parameter at 'LifecyclePolicyText' failed to satisfy "
                       f"constraint: '{exc}'") from None


def policy_not_found(repository: str, registry_id: str) -> AwsError:
    return AwsError("LifecyclePolicyNotFoundException",
                    f"Lifecycle policy does not exist for the repository with name "
                    f"'{repository}' in the registry with id '{registry_id}'")


def _answer(registry_id: str, repository: str, stored: dict[str, Any],
            evaluated: bool = True) -> Json:
    answer: Json = {"registryId": registry_id, "repositoryName": repository,
                    "lifecyclePolicyText": stored["text"]}
    if evaluated and stored.get("lastEvaluatedAt") is not None:
        answer["lastEvaluatedAt"] = stored["lastEvaluatedAt"]
    return answer


@action("PutLifecyclePolicy")
async def put_lifecycle_policy(call: Call, params: Json) -> Json:
    state = call.state
    registry_id, repository = await existing_repository(call, params)
    text = params["lifecyclePolicyText"]
    _rules(text)
    await state.db.write(documents.put, repository, documents.LIFECYCLE, {"text": text},
                         time.time(), registry_id=registry_id)
    return _answer(registry_id, repository, {"text": text}, evaluated=False)


async def _stored(call: Call, params: Json) -> tuple[str, str, dict[str, Any]]:
    state = call.state
    registry_id, repository = await existing_repository(call, params)
    stored = await state.db.read(documents.get, repository, documents.LIFECYCLE)
    if stored is None:
        raise policy_not_found(repository, registry_id)
    return registry_id, repository, stored


@action("GetLifecyclePolicy")
async def get_lifecycle_policy(call: Call, params: Json) -> Json:
    return _answer(*await _stored(call, params))


@action("DeleteLifecyclePolicy")
async def delete_lifecycle_policy(call: Call, params: Json) -> Json:
    registry_id, repository, stored = await _stored(call, params)
    await call.state.db.write(documents.delete, repository, documents.LIFECYCLE)
    return _answer(registry_id, repository, stored)


@action("StartLifecyclePolicyPreview")
async def start_lifecycle_policy_preview(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = state.registry_id(params)
    repository = params["repositoryName"]
    text = params.get("lifecyclePolicyText")
    await state.db.read(store.get_repository, repository, registry_id)
    if text is None:
        text = (await _stored(call, params))[2]["text"]
    rules = _rules(text)
    now = time.time()

    def start(db: sqlite3.Connection) -> None:
        previous = documents.get(db, repository, documents.LIFECYCLE_PREVIEW)
        if previous is not None and previous["readyAt"] > now:
            raise AwsError("LifecyclePolicyPreviewInProgressException",
                           "The previous lifecycle policy preview request has not completed. "
                           "Wait and try again.")
        judged = expiry.judge(db, repository, rules, now)
        documents.put(db, repository, documents.LIFECYCLE_PREVIEW, {
            "text": text, "readyAt": now + state.settings.lifecycle_preview_seconds,
            "results": [{"imageDigest": j.digest, "imageTags": j.tags,
                         "imagePushedAt": j.pushed_at, "appliedRulePriority": j.rule_priority,
                         "action": j.action, "storageClass": j.storage_class}
                        for j in judged]}, now, registry_id=registry_id)

    await state.db.write(start)
    return {"registryId": registry_id, "repositoryName": repository,
            "lifecyclePolicyText": text, "status": "IN_PROGRESS"}


@action("GetLifecyclePolicyPreview")
async def get_lifecycle_policy_preview(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = state.registry_id(params)
    repository = params["repositoryName"]
    image_ids = params.get("imageIds")
    if image_ids is not None and ("maxResults" in params or "nextToken" in params):
        raise AwsError("InvalidParameterException",
                       "maxResults and nextToken cannot be used with imageIds")
    after = paging.decode("GetLifecyclePolicyPreview", params.get("nextToken"), 0)
    limit = paging.page_size(params, DEFAULT_PAGE)
    await state.db.read(store.get_repository, repository, registry_id)
    preview = await state.db.read(documents.get, repository, documents.LIFECYCLE_PREVIEW)
    if preview is None:
        raise AwsError("LifecyclePolicyPreviewNotFoundException",
                       f"There is no lifecycle policy preview for the repository with name "
                       f"'{repository}' in the registry with id '{registry_id}'")
    answer: Json = {"registryId": registry_id, "repositoryName": repository,
                    "lifecyclePolicyText": preview["text"]}
    if preview["readyAt"] > time.time():
        return {**answer, "status": "IN_PROGRESS", "previewResults": []}
    results = preview["results"]
    if image_ids is not None:
        wanted = await state.db.read(_digests, repository, image_ids)
        results = [r for r in results if r["imageDigest"] in wanted]
    tag_status = (params.get("filter") or {}).get("tagStatus", "ANY")
    if tag_status != "ANY":
        results = [r for r in results if bool(r["imageTags"]) == (tag_status == "TAGGED")]
    page = results[after:after + limit]
    every = preview["results"]
    summary: Json = {"expiringImageTotalCount": sum(
        r.get("action", "expire") == "expire" for r in every)}
    transitioning = len(every) - summary["expiringImageTotalCount"]
    if transitioning:  # "only present if at least one image will be transitioned"
        summary["transitioningImageTotalCounts"] = [
            {"targetStorageClass": "ARCHIVE", "imageTotalCount": transitioning}]
    answer.update({
        "status": "COMPLETE",
        "previewResults": [_result(r) for r in page],
        "summary": summary,
    })
    if after + limit < len(results):
        answer["nextToken"] = paging.encode("GetLifecyclePolicyPreview", after + limit)
    return answer


def _result(stored: dict[str, Any]) -> Json:
    action: Json = ({"type": "TRANSITION", "targetStorageClass": "ARCHIVE"}
                    if stored.get("action") == "transition" else {"type": "EXPIRE"})
    result: Json = {"imageDigest": stored["imageDigest"],
                    "imagePushedAt": stored["imagePushedAt"],
                    "action": action,
                    "appliedRulePriority": stored["appliedRulePriority"],
                    "storageClass": stored.get("storageClass", "STANDARD")}
    if stored["imageTags"]:
        result["imageTags"] = stored["imageTags"]
    return result


def _digests(db: sqlite3.Connection, repository: str, image_ids: list[Json]) -> set[str]:
    """The digests of the images ``image_ids`` name (ones that are gone name nothing)."""
    found = set()
    for image_id in image_ids:
        image = image_store.resolve(db, repository, image_id)
        if isinstance(image, Failure):
            if image.code not in ("ImageNotFound", "ImageTagDoesNotMatchDigest"):
                raise AwsError("InvalidParameterException", image.reason)
            digest = image_id.get("imageDigest")
            if digest:
                found.add(digest)  # an image the preview expired may have gone since
            continue
        found.add(image.digest)
    return found
