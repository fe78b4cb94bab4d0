"""Queries on what an image carries besides its manifest (``image_states``): its storage
class (UpdateImageStorageClass), when it was last archived and restored, and its last scan
(StartImageScan). A row goes with its image; an image without one is STANDARD, never
archived and never scanned.
"""

from __future__ import annotations

import sqlite3

from ecr_emulator import image_store, store
from ecr_emulator.db import rows_in
from ecr_emulator.errors import AwsError
from ecr_emulator.image_store import Failure, Image
from ecr_emulator.validation import digest_error, tag_error


def existing_image(db: sqlite3.Connection, repository: str, registry_id: str,
                   image_id: dict[str, str]) -> Image:
    """The image ``image_id`` names; RepositoryNotFoundException, ImageNotFoundException or
    InvalidParameterException otherwise."""
    store.get_repository(db, repository, registry_id)
    return resolved(db, repository, registry_id, image_id)


def resolved(db: sqlite3.Connection, repository: str, registry_id: str,
             image_id: dict[str, str]) -> Image:
    """The image ``image_id`` names in a repository known to exist; ImageNotFoundException
    or InvalidParameterException otherwise."""
    found = image_store.resolve(db, repository, image_id)
    if isinstance(found, Failure):
        if found.code in ("ImageNotFound", "ImageTagDoesNotMatchDigest"):
            shown = ", ".join(f"{k}={v}" for k, v in image_id.items())
            raise AwsError("ImageNotFoundException",
                           f"The image with imageId {{{shown}}} does not exist within the "
                           f"repository with name '{repository}' in the registry with id "
                           f"'{registry_id}'")
        if found.code == "InvalidImageTag":
            raise tag_error()
        if found.code == "InvalidImageDigest":
            raise digest_error()
        raise AwsError("InvalidParameterException", found.reason)
    return found


def storage_class(db: sqlite3.Connection, image_id: int) -> str:
    row = db.execute("SELECT storage_class FROM image_states WHERE image_id = ?",
                     (image_id,)).fetchone()
    return "STANDARD" if row is None else str(row[0])


def archived(db: sqlite3.Connection, image_ids: list[int]) -> set[int]:
    return {row[0] for row in rows_in(
        db, "SELECT image_id FROM image_states WHERE image_id IN ({marks})"
        " AND storage_class = 'ARCHIVE'", image_ids)}


def last_archived(db: sqlite3.Connection, image_ids: list[int]) -> dict[int, float]:
    """When each of ``image_ids`` ever archived was last archived (ImageDetail.lastArchivedAt:
    kept once the image is restored)."""
    return {row[0]: float(row[1]) for row in rows_in(
        db, "SELECT image_id, archived_at FROM image_states WHERE image_id IN ({marks})"
        " AND archived_at IS NOT NULL", image_ids)}


def last_restored(db: sqlite3.Connection, image_ids: list[int]) -> dict[int, float]:
    """When each of ``image_ids`` ever restored from archive was last restored
    (ImageDetail.lastActivatedAt)."""
    return {row[0]: float(row[1]) for row in rows_in(
        db, "SELECT image_id, restored_at FROM image_restores WHERE image_id IN ({marks})",
        image_ids)}


def set_storage_class(db: sqlite3.Connection, image_id: int, target: str, now: float) -> None:
    was_archived = storage_class(db, image_id) == "ARCHIVE"
    db.execute("INSERT OR IGNORE INTO image_states (image_id) VALUES (?)", (image_id,))
    if target == "ARCHIVE":
        db.execute("UPDATE image_states SET storage_class = ?, archived_at = ?"
                   " WHERE image_id = ?", (target, now, image_id))
    else:  # the time of the last archiving stays: lifecycle reads it of archived images only
        db.execute("UPDATE image_states SET storage_class = ? WHERE image_id = ?",
                   (target, image_id))
        if was_archived:
            db.execute("INSERT OR REPLACE INTO image_restores (image_id, restored_at)"
                       " VALUES (?, ?)", (image_id, now))


def set_with_children(db: sqlite3.Connection, repository: str, image_id: int, target: str,
                      now: float) -> None:
    """Move an image, and the child manifests of an index, to storage class ``target``."""
    set_storage_class(db, image_id, target, now)
    for (child,) in db.execute(
            "SELECT i.id FROM image_refs r JOIN images i ON i.digest = r.target AND"
            " i.repository = ? WHERE r.image_id = ? AND r.kind = 'manifest'",
            (repository, image_id)).fetchall():
        set_storage_class(db, child, target, now)


def states(db: sqlite3.Connection, repository: str) -> dict[int, tuple[str, float | None]]:
    """(storage class, archived at) of the images of ``repository`` that have a state row."""
    rows = db.execute("SELECT s.image_id, s.storage_class, s.archived_at FROM image_states s"
                      " JOIN images i ON i.id = s.image_id WHERE i.repository = ?",
                      (repository,))
    return {row[0]: (str(row[1]), row[2]) for row in rows}


def scanned_at(db: sqlite3.Connection, image_id: int) -> float | None:
    row = db.execute("SELECT scanned_at FROM image_states WHERE image_id = ?",
                     (image_id,)).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def set_scanned(db: sqlite3.Connection, image_id: int, now: float) -> None:
    db.execute("INSERT OR IGNORE INTO image_states (image_id) VALUES (?)", (image_id,))
    db.execute("UPDATE image_states SET scanned_at = ? WHERE image_id = ?", (now, image_id))
