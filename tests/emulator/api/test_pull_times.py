"""lastRecordedPullTime: BatchGetImage records a pull, a pull time update exclusion keeps its
principal's pulls from counting, and lifecycle rules of countType sinceImagePulled measure
from the recorded pull."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ecr_emulator import expiry, pull_times, store
from ecr_emulator.settings import Settings
from ecr_emulator.state import EmulatorState
from ecr_model.lifecycle_policy import DAY, parse
from tests.emulator.api.helpers import push_image
from tests.support.emulator import ACCOUNT_ID, EmulatorProcess


async def _pull_time(ecr: Any, repo: str) -> Any:
    (detail,) = (await ecr.describe_images(repositoryName=repo))["imageDetails"]
    return detail.get("lastRecordedPullTime")


async def test_an_excluded_principal_pulls_without_moving_the_pull_time(
        ecr: Any, repo: str, shared_emulator: EmulatorProcess) -> None:
    await ecr.create_repository(repositoryName=repo)
    await push_image(ecr, repo, "v1")
    principal = f"arn:aws:iam::{ACCOUNT_ID}:user/{shared_emulator.access_key_id}"
    await ecr.register_pull_time_update_exclusion(principalArn=principal)
    try:
        await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])
        assert await _pull_time(ecr, repo) is None
    finally:
        await ecr.deregister_pull_time_update_exclusion(principalArn=principal)
    before = time.time()
    await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])
    pulled = await _pull_time(ecr, repo)
    assert pulled is not None and pulled.timestamp() >= before - 1


async def test_since_image_pulled_keeps_an_image_pulled_lately(tmp_path: Path) -> None:
    state = EmulatorState(tmp_path, account_id=ACCOUNT_ID, region="us-east-1", public_url=None,
                          settings=Settings())
    await state.start()
    try:
        now = time.time()
        repo = store.Repository(name="old/images", created_at=now)
        await state.db.write(store.create_repository, repo, registry_id=ACCOUNT_ID,
                             max_repositories=10)

        def push_a_month_ago(db: Any, name: str) -> int:
            cursor = db.execute(
                "INSERT INTO images (repository, digest, manifest, media_type, size,"
                " manifest_size, pushed_at) VALUES (?, ?, '{}', 'application/json', 0, 2, ?)",
                (repo.name, "sha256:" + name * 64, now - 30 * DAY))
            return int(cursor.lastrowid)

        pulled = await state.db.write(push_a_month_ago, "a")
        await state.db.write(push_a_month_ago, "b")
        await state.db.write(pull_times.record, [pulled], "arn:aws:iam::1:user/x", now - DAY)
        rules = parse(json.dumps({"rules": [{
            "rulePriority": 1, "selection": {"tagStatus": "any", "countType": "sinceImagePulled",
                                             "countUnit": "days", "countNumber": 14},
            "action": {"type": "expire"}}]}))
        judged = await state.db.read(expiry.judge, repo.name, rules, now)
        assert [image.digest for image in judged] == ["sha256:" + "b" * 64]
    finally:
        await state.stop()
