"""When an image was last pulled: DescribeImages' ``lastRecordedPullTime``, and what a
lifecycle rule of ``countType`` sinceImagePulled measures.

BatchGetImage records it for the images it returns, except for a caller that is a pull time
update exclusion (RegisterPullTimeUpdateExclusion). ECR "refreshes the last image pull
timestamp at least once every 24 hours" (ImageDetail.lastRecordedPullTime): a time less
than REFRESH_SECONDS old is kept, so pulls in quick succession cost no write.
"""

from __future__ import annotations

import sqlite3

from ecr_emulator import registry_documents as registry
from ecr_emulator.db import rows_in

REFRESH_SECONDS = 3600.0


def of(db: sqlite3.Connection, image_ids: list[int]) -> dict[int, float]:
    """The recorded pull time of each of ``image_ids`` that was ever pulled."""
    return {row[0]: float(row[1]) for row in rows_in(
        db, "SELECT image_id, pulled_at FROM image_pulls WHERE image_id IN ({marks})",
        image_ids)}


def stale(db: sqlite3.Connection, image_ids: list[int], now: float) -> list[int]:
    """Those of ``image_ids`` whose recorded pull time a pull at ``now`` would move."""
    recorded = of(db, image_ids)
    return [i for i in dict.fromkeys(image_ids)
            if now - recorded.get(i, float("-inf")) >= REFRESH_SECONDS]


def record(db: sqlite3.Connection, image_ids: list[int], principal: str, now: float) -> None:
    """A pull of ``image_ids`` at ``now`` by ``principal`` (an IAM ARN)."""
    if registry.get(db, registry.EXCLUSION, principal) is not None:
        return
    db.executemany("INSERT INTO image_pulls (image_id, pulled_at) SELECT ?, ?"
                   " WHERE EXISTS (SELECT 1 FROM images WHERE id = ?)"
                   " ON CONFLICT (image_id) DO UPDATE SET pulled_at = excluded.pulled_at",
                   [(i, now, i) for i in image_ids])
