"""Queries on repositories, layers, uploads and authorization tokens.

Each function takes the connection first and runs on the database thread, through
``Database.read`` or ``Database.write`` (one transaction). Domain failures are raised as
``AwsError`` so that a write rolls back and the caller sees the modelled exception.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import orjson

from ecr_emulator.errors import AwsError


@dataclass(frozen=True)
class Repository:
    name: str
    created_at: float
    tag_mutability: str = "MUTABLE"
    mutability_filters: list[dict[str, str]] | None = None
    scan_on_push: bool = False
    encryption_type: str = "AES256"
    kms_key: str | None = None
    tags: tuple[dict[str, str], ...] = ()
    id: int = 0


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int
    media_type: str | None


@dataclass(frozen=True)
class Upload:
    id: str
    repository: str
    received: int
    parts: int


def repository_not_found(name: str, registry_id: str) -> AwsError:
    return AwsError("RepositoryNotFoundException",
                    f"The repository with name '{name}' does not exist in the registry with "
                    f"id '{registry_id}'")


# Repositories


def create_repository(db: sqlite3.Connection, repo: Repository, *, registry_id: str,
                      max_repositories: int) -> Repository:
    if db.execute("SELECT 1 FROM repositories WHERE name = ?", (repo.name,)).fetchone():
        raise AwsError("RepositoryAlreadyExistsException",
                       f"The repository with name '{repo.name}' already exists in the registry "
                       f"with id '{registry_id}'")
    (count,) = db.execute("SELECT count(*) FROM repositories").fetchone()
    if count >= max_repositories:
        raise AwsError("LimitExceededException",
                       f"The maximum number of repositories ({max_repositories}) was reached")
    cur = db.execute(
        "INSERT INTO repositories (name, created_at, tag_mutability, mutability_filters,"
        " scan_on_push, encryption_type, kms_key, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (repo.name, repo.created_at, repo.tag_mutability, _json(repo.mutability_filters),
         int(repo.scan_on_push), repo.encryption_type, repo.kms_key, _json(list(repo.tags))),
    )
    return _repository(db.execute("SELECT * FROM repositories WHERE id = ?",
                                  (cur.lastrowid,)).fetchone())


def get_repository(db: sqlite3.Connection, name: str, registry_id: str) -> Repository:
    row = db.execute("SELECT * FROM repositories WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise repository_not_found(name, registry_id)
    return _repository(row)


def repository_exists(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM repositories WHERE name = ?", (name,)).fetchone() is not None


def list_repositories(db: sqlite3.Connection, after_id: int, limit: int) -> list[Repository]:
    rows = db.execute("SELECT * FROM repositories WHERE id > ? ORDER BY id LIMIT ?",
                      (after_id, limit))
    return [_repository(row) for row in rows]


@dataclass(frozen=True)
class DeletedRepository:
    repository: Repository
    layer_digests: list[str]
    upload_ids: list[str]


def delete_repository(db: sqlite3.Connection, name: str, *, force: bool,
                      registry_id: str) -> DeletedRepository:
    repo = get_repository(db, name, registry_id)
    if not force and db.execute("SELECT 1 FROM images WHERE repository = ? LIMIT 1",
                                (name,)).fetchone():
        raise AwsError("RepositoryNotEmptyException",
                       f"The repository with name '{name}' in registry with id '{registry_id}' "
                       "cannot be deleted because it still contains images")
    digests = [r[0] for r in db.execute("SELECT digest FROM layers WHERE repository = ?", (name,))]
    uploads = [r[0] for r in db.execute("SELECT id FROM uploads WHERE repository = ?", (name,))]
    db.execute("DELETE FROM repositories WHERE name = ?", (name,))  # cascades to the rest
    return DeletedRepository(repo, digests, uploads)


def _repository(row: sqlite3.Row) -> Repository:
    filters = row["mutability_filters"]
    return Repository(
        id=row["id"],
        name=row["name"],
        created_at=row["created_at"],
        tag_mutability=row["tag_mutability"],
        mutability_filters=orjson.loads(filters) if filters else None,
        scan_on_push=bool(row["scan_on_push"]),
        encryption_type=row["encryption_type"],
        kms_key=row["kms_key"],
        tags=tuple(orjson.loads(row["tags"])),
    )


# Layers


def get_layers(db: sqlite3.Connection, repository: str, digests: list[str]) -> dict[str, Layer]:
    found: dict[str, Layer] = {}
    for chunk in _chunks(digests):
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            "SELECT digest, size, media_type FROM layers WHERE repository = ?"
            f" AND digest IN ({marks})",
            (repository, *chunk),
        )
        for row in rows:
            found[row["digest"]] = Layer(row["digest"], row["size"], row["media_type"])
    return found


def referenced_layer(db: sqlite3.Connection, repository: str, digest: str) -> Layer | None:
    """The layer if some image of ``repository`` references it (config or layer)."""
    row = db.execute(
        "SELECT l.digest, l.size, l.media_type FROM layers l WHERE l.repository = ?"
        " AND l.digest = ? AND EXISTS (SELECT 1 FROM image_refs r JOIN images i"
        " ON i.id = r.image_id WHERE r.target = l.digest AND r.kind = 'blob'"
        " AND i.repository = l.repository)",
        (repository, digest),
    ).fetchone()
    return None if row is None else Layer(row["digest"], row["size"], row["media_type"])


def digest_in_use(db: sqlite3.Connection, digest: str) -> bool:
    """Whether any repository still holds ``digest`` as a layer (its blob must stay)."""
    row = db.execute("SELECT 1 FROM layers WHERE digest = ? LIMIT 1", (digest,)).fetchone()
    return row is not None


def all_layer_digests(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT DISTINCT digest FROM layers")}


# Uploads


def create_upload(db: sqlite3.Connection, repository: str, upload_id: str, now: float,
                  *, registry_id: str) -> None:
    get_repository(db, repository, registry_id)
    db.execute("INSERT INTO uploads (id, repository, created_at) VALUES (?, ?, ?)",
               (upload_id, repository, now))


def get_upload(db: sqlite3.Connection, repository: str, upload_id: str,
               *, registry_id: str) -> Upload:
    get_repository(db, repository, registry_id)
    row = db.execute(
        "SELECT u.id, u.repository, u.received, (SELECT count(*) FROM upload_parts p"
        " WHERE p.upload_id = u.id) AS parts FROM uploads u WHERE u.id = ? AND u.repository = ?",
        (upload_id, repository),
    ).fetchone()
    if row is None:
        raise AwsError("UploadNotFoundException",
                       f"Upload with id '{upload_id}' is not found in repository '{repository}' "
                       f"in registry with id '{registry_id}'")
    return Upload(row["id"], row["repository"], row["received"], row["parts"])


def record_part(db: sqlite3.Connection, upload: Upload, size: int, now: float) -> None:
    """Accept a part whose bytes are already fsynced at offset ``upload.received``."""
    cur = db.execute("UPDATE uploads SET received = received + ? WHERE id = ? AND received = ?",
                     (size, upload.id, upload.received))
    if cur.rowcount != 1:  # the repository was deleted, or the upload expired, meanwhile
        raise AwsError("UploadNotFoundException", f"Upload with id '{upload.id}' is not found")
    db.execute("INSERT INTO upload_parts (upload_id, number, first_byte, size) VALUES (?, ?, ?, ?)",
               (upload.id, upload.parts, upload.received, size))
    db.execute("INSERT OR REPLACE INTO upload_activity (upload_id, last_part_at) VALUES (?, ?)",
               (upload.id, now))


# An upload's last sign of life: its last accepted part, else its InitiateLayerUpload.
_LAST_ACTIVE = ("max(u.created_at, coalesce((SELECT a.last_part_at FROM upload_activity a"
                " WHERE a.upload_id = u.id), 0))")


def idle_uploads(db: sqlite3.Connection, before: float) -> list[tuple[str, str]]:
    """The uploads (id, repository) that have shown no sign of life since ``before``."""
    return [(row[0], row[1]) for row in db.execute(
        f"SELECT u.id, u.repository FROM uploads u WHERE {_LAST_ACTIVE} < ?", (before,))]


def expire_upload(db: sqlite3.Connection, upload_id: str, before: float) -> bool:
    """End the upload if it is still idle since ``before`` (a part may have come meanwhile);
    whether it ended."""
    cur = db.execute(f"DELETE FROM uploads WHERE id IN (SELECT u.id FROM uploads u"
                     f" WHERE u.id = ? AND {_LAST_ACTIVE} < ?)", (upload_id, before))
    return cur.rowcount == 1


def undersized_parts(db: sqlite3.Connection, upload_id: str, min_size: int) -> int:
    """How many parts other than the last are smaller than ``min_size``."""
    (count,) = db.execute(
        "SELECT count(*) FROM upload_parts WHERE upload_id = ? AND size < ? AND number <"
        " (SELECT max(number) FROM upload_parts WHERE upload_id = ?)",
        (upload_id, min_size, upload_id),
    ).fetchone()
    return int(count)


def layer_exists_error(digest: str, repository: str, registry_id: str) -> AwsError:
    return AwsError("LayerAlreadyExistsException",
                    f"Layer '{digest}' already exists in the repository with name "
                    f"'{repository}' in registry with id '{registry_id}'")


def finish_upload(db: sqlite3.Connection, upload: Upload, digest: str, now: float,
                  *, registry_id: str) -> None:
    """Turn the upload into a layer of its repository; the upload is gone afterwards."""
    db.execute("DELETE FROM uploads WHERE id = ?", (upload.id,))
    cur = db.execute(
        "INSERT OR IGNORE INTO layers (repository, digest, size, created_at) VALUES (?, ?, ?, ?)",
        (upload.repository, digest, upload.received, now),
    )
    if cur.rowcount == 0:  # a concurrent upload of the same layer finished first
        raise layer_exists_error(digest, upload.repository, registry_id)


def delete_upload(db: sqlite3.Connection, upload_id: str) -> None:
    db.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))


def all_uploads(db: sqlite3.Connection) -> dict[str, int]:
    return {row[0]: row[1] for row in db.execute("SELECT id, received FROM uploads")}


# Authorization tokens


def save_token(db: sqlite3.Connection, password: str, *, access_key_id: str | None,
               region: str | None, registry_id: str, expires_at: float, now: float) -> None:
    db.execute("DELETE FROM auth_tokens WHERE expires_at < ?", (now,))
    db.execute(
        "INSERT INTO auth_tokens (password, access_key_id, region, registry_id, expires_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (password, access_key_id, region, registry_id, expires_at),
    )


def find_token(db: sqlite3.Connection, password: str, now: float) -> dict[str, Any] | None:
    row = db.execute("SELECT * FROM auth_tokens WHERE password = ? AND expires_at >= ?",
                     (password, now)).fetchone()
    return None if row is None else dict(row)


# Helpers


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _chunks(items: list[str], size: int = 500) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
