"""Queries on images, their tags and what they reference (run on the database thread).

An image is a manifest stored byte-exact under its sha256 digest; a tag names one image of
a repository; ``image_refs`` records the blobs and child manifests an image needs, which is
what GetDownloadUrlForLayer, BatchDeleteImage and ListImageReferrers consult.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import orjson

from ecr_emulator import store, wildcards
from ecr_emulator.db import rows_in
from ecr_emulator.errors import AwsError
from ecr_emulator.manifests import Manifest
from ecr_emulator.validation import is_image_digest, is_tag


@dataclass(frozen=True)
class Image:
    id: int
    digest: str
    media_type: str
    artifact_media_type: str | None
    artifact_type: str | None
    subject: str | None
    annotations: dict[str, str] | None
    size: int
    manifest_size: int
    pushed_at: float


_COLUMNS = ("id, digest, media_type, artifact_media_type, artifact_type, subject, annotations,"
            " size, manifest_size, pushed_at")


def _image(row: sqlite3.Row) -> Image:
    annotations = row["annotations"]
    return Image(
        id=row["id"], digest=row["digest"], media_type=row["media_type"],
        artifact_media_type=row["artifact_media_type"], artifact_type=row["artifact_type"],
        subject=row["subject"], annotations=orjson.loads(annotations) if annotations else None,
        size=row["size"], manifest_size=row["manifest_size"], pushed_at=row["pushed_at"],
    )


def tag_is_immutable(repo: store.Repository, tag: str) -> bool:
    """Whether ``tag`` may not move, given the repository's mutability and exclusion filters."""
    matches = any(wildcards.matches(tag, f["filter"]) for f in repo.mutability_filters or [])
    return {
        "IMMUTABLE": True,
        "MUTABLE": False,
        "IMMUTABLE_WITH_EXCLUSION": not matches,
        "MUTABLE_WITH_EXCLUSION": matches,
    }.get(repo.tag_mutability, False)


# PutImage


def put_image(db: sqlite3.Connection, *, repository: str, registry_id: str, digest: str,
              text: str, manifest: Manifest, tag: str | None, now: float,
              max_images: int, restores: bool = False) -> None:
    """Store the image and move ``tag`` to it, with PutImage's checks, in one transaction.
    ``restores``: the image is archived, and pushing it again restores it (ECR: "If you
    push an image that is currently archived, that image will be automatically restored"),
    so it is not ImageAlreadyExistsException."""
    repo = store.get_repository(db, repository, registry_id)
    needed = list(dict.fromkeys(d.digest for d in manifest.blobs if d.distributable))
    layers = store.get_layers(db, repository, needed)
    missing = [d for d in needed if d not in layers]
    if missing:
        raise AwsError("LayersNotFoundException",
                       f"Layers with digests {missing} required for pushing image into repository "
                       f"with name '{repository}' in the registry with id '{registry_id}' do not "
                       "exist")
    children = _images_by_digest(db, repository, list(manifest.children))
    missing = [d for d in manifest.children if d not in children]
    if missing:
        raise AwsError("ReferencedImagesNotFoundException",
                       f"Manifest list references images that do not exist in repository "
                       f"'{repository}': {missing}")
    existing = find_by_digest(db, repository, digest)
    tagged = find_by_tag(db, repository, tag) if tag else None
    if existing is not None and not restores and (
            tag is None or (tagged is not None and tagged.id == existing.id)):
        shown = f" and tag '{tag}'" if tag else ""
        raise AwsError("ImageAlreadyExistsException",
                       f"Image with digest '{digest}'{shown} already exists in the repository "
                       f"with name '{repository}' in registry with id '{registry_id}'")
    if tag and tagged is not None and tagged.digest != digest and tag_is_immutable(repo, tag):
        raise AwsError("ImageTagAlreadyExistsException",
                       f"The image tag '{tag}' already exists in the '{repository}' repository "
                       "and cannot be overwritten because the tag is immutable.")
    image_id = existing.id if existing else _insert_image(
        db, repository, digest, text, manifest, layers, children, now, max_images)
    if tag:
        db.execute("INSERT OR REPLACE INTO image_tags (repository, tag, image_id, tagged_at)"
                   " VALUES (?, ?, ?, ?)", (repository, tag, image_id, now))


def _insert_image(db: sqlite3.Connection, repository: str, digest: str, text: str,
                  manifest: Manifest, layers: dict[str, store.Layer],
                  children: dict[str, Image], now: float, max_images: int) -> int:
    (count,) = db.execute("SELECT count(*) FROM images WHERE repository = ?",
                          (repository,)).fetchone()
    if count >= max_images:
        raise AwsError("LimitExceededException",
                       f"The repository '{repository}' already holds the maximum of "
                       f"{max_images} images")
    if manifest.is_index:
        # ImageDetail: "If the image is a manifest list, this will be the max size of all
        # manifests in the list."
        size = max((child.size for child in children.values()), default=0)
    else:
        size = sum(layers[d.digest].size for d in manifest.layers if d.digest in layers)
    cur = db.execute(
        "INSERT INTO images (repository, digest, manifest, media_type, artifact_media_type,"
        " artifact_type, subject, annotations, size, manifest_size, pushed_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (repository, digest, text, manifest.media_type, manifest.config_media_type,
         manifest.artifact_type or manifest.config_media_type, manifest.subject,
         orjson.dumps(manifest.annotations).decode() if manifest.annotations else None,
         size, len(text.encode()), now),
    )
    image_id = cur.lastrowid
    assert image_id is not None
    refs = [(image_id, "blob", d) for d in dict.fromkeys(b.digest for b in manifest.blobs)]
    refs += [(image_id, "manifest", d) for d in manifest.children]
    db.executemany("INSERT OR IGNORE INTO image_refs (image_id, kind, target) VALUES (?, ?, ?)",
                   refs)
    db.executemany(
        "UPDATE layers SET media_type = ? WHERE repository = ? AND digest = ?"
        " AND media_type IS NULL",
        [(d.media_type, repository, d.digest) for d in manifest.blobs if d.media_type],
    )
    return image_id


# Lookups


def find_by_digest(db: sqlite3.Connection, repository: str, digest: str) -> Image | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM images WHERE repository = ? AND digest = ?",
                     (repository, digest)).fetchone()
    return None if row is None else _image(row)


def find_by_tag(db: sqlite3.Connection, repository: str, tag: str) -> Image | None:
    row = db.execute(
        f"SELECT {_COLUMNS} FROM images WHERE id = (SELECT image_id FROM image_tags"
        " WHERE repository = ? AND tag = ?)", (repository, tag)).fetchone()
    return None if row is None else _image(row)


def manifest_of(db: sqlite3.Connection, image_id: int) -> str:
    return str(db.execute("SELECT manifest FROM images WHERE id = ?", (image_id,)).fetchone()[0])


def tags_of(db: sqlite3.Connection, image_ids: list[int]) -> dict[int, list[str]]:
    tags: dict[int, list[str]] = {i: [] for i in image_ids}
    for image_id, tag in rows_in(db, "SELECT image_id, tag FROM image_tags WHERE image_id"
                                 " IN ({marks}) ORDER BY tagged_at, tag", image_ids):
        tags[image_id].append(tag)
    return tags


def _images_by_digest(db: sqlite3.Connection, repository: str,
                      digests: list[str]) -> dict[str, Image]:
    rows = rows_in(db, f"SELECT {_COLUMNS} FROM images WHERE repository = ?"
                   " AND digest IN ({marks})", digests, repository)
    return {row["digest"]: _image(row) for row in rows}


@dataclass(frozen=True)
class Failure:
    code: str
    reason: str


def resolve(db: sqlite3.Connection, repository: str, image_id: dict[str, Any]) -> Image | Failure:
    """The image an ``ImageIdentifier`` names, or the BatchGetImage-style failure."""
    digest, tag = image_id.get("imageDigest"), image_id.get("imageTag")
    if digest is None and tag is None:
        return Failure("MissingDigestAndTag",
                       "Invalid request parameters: both tag and digest cannot be null")
    if digest is not None and not is_image_digest(digest):
        return Failure("InvalidImageDigest",
                       "Invalid request parameters: image digest should satisfy the regex "
                       "'[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+'")
    if tag is not None and not is_tag(tag):
        return Failure("InvalidImageTag", f"Invalid request parameters: invalid image tag '{tag}'")
    by_tag = find_by_tag(db, repository, tag) if tag is not None else None
    if digest is None:
        return by_tag or Failure("ImageNotFound", "Requested image not found")
    image = find_by_digest(db, repository, digest)
    if image is None:
        return Failure("ImageNotFound", "Requested image not found")
    if tag is not None and (by_tag is None or by_tag.id != image.id):
        return Failure("ImageTagDoesNotMatchDigest",
                       "Invalid request parameters: given tag does not map to the given digest")
    return image


# Listing


def _storage_is(column: str, storage: str | None) -> str:
    """SQL selecting images of storage class ``storage`` (STANDARD, ARCHIVE; None: any)."""
    if storage is None:
        return "1"
    assert storage in ("STANDARD", "ARCHIVE")
    return (f"coalesce((SELECT s.storage_class FROM image_states s WHERE s.image_id = {column}),"
            f" 'STANDARD') = '{storage}'")


def list_image_ids(db: sqlite3.Connection, repository: str, tag_status: str,
                   after: tuple[int, str], limit: int,
                   storage: str | None = "STANDARD") -> list[tuple[int, str, str | None]]:
    """(image id, digest, tag) rows: one per tag, one per untagged image, in push order."""
    where = {"TAGGED": "t.tag IS NOT NULL", "UNTAGGED": "t.tag IS NULL"}.get(tag_status, "1")
    rows = db.execute(
        "SELECT i.id, i.digest, t.tag FROM images i LEFT JOIN image_tags t ON t.image_id = i.id"
        f" WHERE i.repository = ? AND {where} AND {_storage_is('i.id', storage)}"
        " AND (i.id, coalesce(t.tag, '')) > (?, ?)"
        " ORDER BY i.id, coalesce(t.tag, '') LIMIT ?",
        (repository, after[0], after[1], limit),
    )
    return [(row[0], row[1], row[2]) for row in rows]


def list_images(db: sqlite3.Connection, repository: str, tag_status: str, after: int,
                limit: int, storage: str | None = "STANDARD") -> list[Image]:
    where = {
        "TAGGED": "EXISTS (SELECT 1 FROM image_tags t WHERE t.image_id = images.id)",
        "UNTAGGED": "NOT EXISTS (SELECT 1 FROM image_tags t WHERE t.image_id = images.id)",
    }.get(tag_status, "1")
    rows = db.execute(f"SELECT {_COLUMNS} FROM images WHERE repository = ? AND {where}"
                      f" AND {_storage_is('images.id', storage)}"
                      " AND id > ? ORDER BY id LIMIT ?", (repository, after, limit))
    return [_image(row) for row in rows]


def referrers(db: sqlite3.Connection, repository: str, subject: str,
              artifact_types: list[str], after: int, limit: int,
              storage: str | None = "STANDARD") -> list[Image]:
    sql = (f"SELECT {_COLUMNS} FROM images WHERE repository = ? AND subject = ? AND id > ?"
           f" AND {_storage_is('images.id', storage)}")
    args: list[Any] = [repository, subject, after]
    if artifact_types:
        sql += f" AND artifact_type IN ({','.join('?' * len(artifact_types))})"
        args += artifact_types
    rows = db.execute(sql + " ORDER BY id LIMIT ?", (*args, limit))
    return [_image(row) for row in rows]


# BatchDeleteImage


def batch_delete(
    db: sqlite3.Connection, repository: str, registry_id: str, image_ids: list[dict[str, Any]],
) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """Delete by tag (the tag; the image with its last tag) or by digest (image and tags)."""
    store.get_repository(db, repository, registry_id)
    deleted: list[dict[str, str]] = []
    failures: list[dict[str, Any]] = []
    for image_id in image_ids:
        found = resolve(db, repository, image_id)
        if isinstance(found, Failure):
            failures.append({"imageId": image_id, "failureCode": found.code,
                             "failureReason": found.reason})
        elif "imageDigest" not in image_id:
            deleted.append(_untag(db, repository, found, image_id["imageTag"]))
        elif _referenced_by_index(db, repository, found.digest):
            failures.append({"imageId": image_id, "failureCode": "ImageReferencedByManifestList",
                             "failureReason": "Requested image is referenced by an image index "
                                              "in this repository"})
        else:
            tags = tags_of(db, [found.id])[found.id]
            db.execute("DELETE FROM images WHERE id = ?", (found.id,))
            deleted += [{"imageDigest": found.digest, "imageTag": t} for t in tags] or [
                {"imageDigest": found.digest}]
    return deleted, failures


def _untag(db: sqlite3.Connection, repository: str, image: Image, tag: str) -> dict[str, str]:
    db.execute("DELETE FROM image_tags WHERE repository = ? AND tag = ?", (repository, tag))
    last_tag = not tags_of(db, [image.id])[image.id]
    # An index's child stays (untagged) while the index needs it.
    if last_tag and not _referenced_by_index(db, repository, image.digest):
        db.execute("DELETE FROM images WHERE id = ?", (image.id,))
    return {"imageDigest": image.digest, "imageTag": tag}


def _referenced_by_index(db: sqlite3.Connection, repository: str, digest: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM image_refs r JOIN images i ON i.id = r.image_id WHERE r.target = ?"
        " AND r.kind = 'manifest' AND i.repository = ? LIMIT 1", (digest, repository)).fetchone()
    return row is not None
