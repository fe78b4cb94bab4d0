"""RegisterPullTimeUpdateExclusion, DeregisterPullTimeUpdateExclusion,
ListPullTimeUpdateExclusions: the IAM principals whose pulls do not update an image's last
recorded pull time (pull_times.py), at most 100.
"""

from __future__ import annotations

import sqlite3
import time

from ecr_emulator import paging
from ecr_emulator import registry_documents as registry
from ecr_emulator.errors import AwsError
from ecr_emulator.protocol import Call, Json, action

MAX_EXCLUSIONS = 100


@action("RegisterPullTimeUpdateExclusion")
async def register_exclusion(call: Call, params: Json) -> Json:
    arn = params["principalArn"]
    now = time.time()

    def register(db: sqlite3.Connection) -> None:
        if registry.get(db, registry.EXCLUSION, arn) is not None:
            raise AwsError("ExclusionAlreadyExistsException",
                           f"The principal '{arn}' is already excluded")
        if registry.count(db, registry.EXCLUSION) >= MAX_EXCLUSIONS:
            raise AwsError("LimitExceededException",
                           f"A registry has at most {MAX_EXCLUSIONS} pull time update "
                           "exclusions")
        registry.put(db, registry.EXCLUSION, arn, {"createdAt": now}, now)

    await call.state.db.write(register)
    return {"principalArn": arn, "createdAt": now}


@action("DeregisterPullTimeUpdateExclusion")
async def deregister_exclusion(call: Call, params: Json) -> Json:
    arn = params["principalArn"]
    if await call.state.db.write(registry.delete, registry.EXCLUSION, arn) is None:
        raise AwsError("ExclusionNotFoundException", f"The principal '{arn}' is not excluded")
    return {"principalArn": arn}


@action("ListPullTimeUpdateExclusions")
async def list_exclusions(call: Call, params: Json) -> Json:
    arns = [arn for arn, _ in await call.state.db.read(registry.all_of, registry.EXCLUSION)]
    after = paging.decode("ListPullTimeUpdateExclusions", params.get("nextToken"), "")
    if after:
        arns = [a for a in arns if a > after]
    limit = paging.page_size(params, 100)
    result: Json = {"pullTimeUpdateExclusions": arns[:limit]}
    if len(arns) > limit:
        result["nextToken"] = paging.encode("ListPullTimeUpdateExclusions", arns[limit - 1])
    return result
