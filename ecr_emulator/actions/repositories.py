"""CreateRepository, DescribeRepositories, DeleteRepository."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ecr_emulator import paging, store
from ecr_emulator.errors import AwsError
from ecr_emulator.protocol import Call, Json, action
from ecr_emulator.state import EmulatorState

MAX_TAGS = 50  # TooManyTagsException: "The maximum number of tags ... is 50."
EXCLUSION_MODES = ("IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION")


def repository_json(state: EmulatorState, repo: store.Repository) -> Json:
    encryption: Json = {"encryptionType": repo.encryption_type}
    if repo.kms_key:
        encryption["kmsKey"] = repo.kms_key
    result: Json = {
        "repositoryArn": state.repository_arn(repo.name),
        "registryId": state.account_id,
        "repositoryName": repo.name,
        "repositoryUri": state.repository_uri(repo.name),
        "createdAt": repo.created_at,
        "imageTagMutability": repo.tag_mutability,
        "imageScanningConfiguration": {"scanOnPush": repo.scan_on_push},
        "encryptionConfiguration": encryption,
    }
    if repo.mutability_filters:
        result["imageTagMutabilityExclusionFilters"] = repo.mutability_filters
    return result


@action("CreateRepository")
async def create_repository(call: Call, params: Json) -> Json:
    state = call.state
    if params.get("registryId", state.account_id) != state.account_id:
        raise AwsError("InvalidParameterException",
                       f"Repositories can only be created in registry '{state.account_id}'")
    mutability = params.get("imageTagMutability", "MUTABLE")
    filters = params.get("imageTagMutabilityExclusionFilters")
    if (mutability in EXCLUSION_MODES) != bool(filters):
        raise AwsError("InvalidParameterException",
                       "Invalid parameter at 'imageTagMutabilityExclusionFilters' failed to "
                       "satisfy constraint: 'exclusion filters are required with, and only "
                       f"allowed with, {' or '.join(EXCLUSION_MODES)}'")
    encryption = params.get("encryptionConfiguration") or {"encryptionType": "AES256"}
    if encryption.get("kmsKey") and encryption["encryptionType"] == "AES256":
        raise AwsError("InvalidParameterException",
                       "Invalid parameter at 'encryptionConfiguration' failed to satisfy "
                       "constraint: 'kmsKey can only be given with a KMS encryption type'")
    repo = store.Repository(
        name=params["repositoryName"],
        created_at=time.time(),
        tag_mutability=mutability,
        mutability_filters=filters,
        scan_on_push=bool((params.get("imageScanningConfiguration") or {}).get("scanOnPush")),
        encryption_type=encryption["encryptionType"],
        kms_key=encryption.get("kmsKey"),
        tags=tuple(_check_tags(params.get("tags") or [])),
    )
    created = await state.db.write(store.create_repository, repo, registry_id=state.account_id,
                                   max_repositories=state.settings.max_repositories)
    return {"repository": repository_json(state, created)}


def _check_tags(tags: list[dict[str, Any]]) -> list[dict[str, str]]:
    if len(tags) > MAX_TAGS:
        raise AwsError("TooManyTagsException",
                       f"{len(tags)} tags exceed the maximum of {MAX_TAGS} per repository")
    keys = set()
    for tag in tags:
        key, value = tag["Key"], tag["Value"]
        if not 1 <= len(key) <= 128 or len(value) > 256 or key.lower().startswith("aws:"):
            raise AwsError("InvalidTagParameterException",
                           "Tag keys have 1 to 128 characters, cannot start with 'aws:', and "
                           "tag values have at most 256 characters")
        if key in keys:
            raise AwsError("InvalidTagParameterException", f"Duplicate tag key '{key}'")
        keys.add(key)
    return [{"Key": t["Key"], "Value": t["Value"]} for t in tags]


@action("DescribeRepositories")
async def describe_repositories(call: Call, params: Json) -> Json:
    state = call.state
    names = params.get("repositoryNames")
    registry_id = params.get("registryId") or state.account_id
    if names is not None:
        if "maxResults" in params or "nextToken" in params:
            raise AwsError("InvalidParameterException",
                           "maxResults and nextToken cannot be used with repositoryNames")
        repos = []
        for name in dict.fromkeys(names):
            if registry_id != state.account_id:
                raise store.repository_not_found(name, registry_id)
            repos.append(await state.db.read(store.get_repository, name, registry_id))
        return {"repositories": [repository_json(state, r) for r in repos]}
    after = paging.decode("DescribeRepositories", params.get("nextToken"), 0)
    limit = paging.page_size(params, 100)
    if registry_id != state.account_id:
        return {"repositories": []}
    repos = await state.db.read(store.list_repositories, int(after), limit + 1)
    result: Json = {"repositories": [repository_json(state, r) for r in repos[:limit]]}
    if len(repos) > limit:
        result["nextToken"] = paging.encode("DescribeRepositories", repos[limit - 1].id)
    return result


@action("DeleteRepository")
async def delete_repository(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = state.registry_id(params)
    deleted = await state.db.write(store.delete_repository, params["repositoryName"],
                                   force=bool(params.get("force")), registry_id=registry_id)
    for upload_id in deleted.upload_ids:
        state.hashes.pop(upload_id, None)
        await asyncio.to_thread(state.blobs.discard_upload, upload_id)
    await state.remove_unused_blobs(deleted.layer_digests)
    return {"repository": repository_json(state, deleted.repository)}
