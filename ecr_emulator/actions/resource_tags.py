"""ListTagsForResource, TagResource, UntagResource (ECR; ECR Public reuses the handlers).

The resource is a repository named by its ARN: ``arn:aws:ecr:<region>:<account>:repository/
<name>`` for ECR, ``arn:aws:ecr-public::<account>:repository/<name>`` for ECR Public. A
malformed ARN is InvalidParameterException; a well-formed one naming another account or
region, or no repository, is RepositoryNotFoundException. Tags follow CreateRepository's
rules (keys of 1 to 128 characters without ``aws:``, values up to 256, at most 50 per repository).
"""

from __future__ import annotations

import re
from typing import Any

from ecr_emulator import documents, store
from ecr_emulator.actions.repositories import MAX_TAGS
from ecr_emulator.actions.repositories import _check_tags as check_tags
from ecr_emulator.errors import AwsError
from ecr_emulator.protocol import Call, Json, action

_ARN = {
    "ecr": re.compile(r"arn:aws[a-z-]*:ecr:([a-z0-9-]+):(\d{12}):repository/(.+)"),
    "ecr-public": re.compile(r"arn:aws[a-z-]*:ecr-public::(\d{12}):repository/(.+)"),
}


def repository_of(call: Call, arn: str) -> str:
    """The repository an ARN names in this registry (RepositoryNotFoundException if none)."""
    state = call.state
    match = _ARN[call.service].fullmatch(arn)
    if match is None:
        raise AwsError("InvalidParameterException",
                       f"Invalid parameter at 'resourceArn' failed to satisfy constraint: "
                       f"'{arn}' is not a repository ARN of {call.service}")
    if call.service == "ecr":
        region, account, name = match[1], match[2], match[3]
    else:
        region, account, name = state.region, match[1], match[2]
    if account != state.account_id or region != state.region:
        raise store.repository_not_found(name, account)
    return name


def _normalised(tags: list[dict[str, Any]]) -> list[dict[str, str]]:
    out = []
    for tag in tags:
        key = tag.get("Key")
        if not isinstance(key, str):
            raise AwsError("InvalidTagParameterException", "Every tag needs a Key")
        out.append({"Key": key, "Value": str(tag.get("Value") or "")})
    return out


@action("ListTagsForResource")
async def list_tags_for_resource(call: Call, params: Json) -> Json:
    name = repository_of(call, params["resourceArn"])
    repo = await call.state.db.read(store.get_repository, name, call.state.account_id)
    return {"tags": list(repo.tags)}


@action("TagResource")
async def tag_resource(call: Call, params: Json) -> Json:
    state = call.state
    name = repository_of(call, params["resourceArn"])
    new = check_tags(_normalised(params["tags"]))

    def update(db: Any) -> None:
        repo = store.get_repository(db, name, state.account_id)
        merged = {t["Key"]: t["Value"] for t in repo.tags}
        merged.update({t["Key"]: t["Value"] for t in new})
        if len(merged) > MAX_TAGS:
            raise AwsError("TooManyTagsException",
                           f"The repository would have {len(merged)} tags; the maximum is "
                           f"{MAX_TAGS}")
        documents.set_tags(db, name, [{"Key": k, "Value": v} for k, v in merged.items()])

    await state.db.write(update)
    return {}


@action("UntagResource")
async def untag_resource(call: Call, params: Json) -> Json:
    state = call.state
    name = repository_of(call, params["resourceArn"])
    keys = params["tagKeys"]
    for key in keys:
        if not 1 <= len(key) <= 128 or key.lower().startswith("aws:"):
            raise AwsError("InvalidTagParameterException",
                           "Tag keys have 1 to 128 characters and cannot start with 'aws:'")

    def update(db: Any) -> None:
        repo = store.get_repository(db, name, state.account_id)
        kept = [t for t in repo.tags if t["Key"] not in set(keys)]
        documents.set_tags(db, name, kept)

    await state.db.write(update)
    return {}
