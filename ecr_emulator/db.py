"""The SQLite database: schema, and a single thread that runs every query.

One connection on one dedicated thread serialises all access, so a query function is a
transaction that no other request interleaves with (check-then-insert needs no locks), and the
event loop never waits on SQLite. WAL mode with ``synchronous=FULL``: a commit returns only
once the WAL is on disk, so an acknowledged write survives a crash of the process and of the
machine.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS repositories (
    id                 INTEGER PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    created_at         REAL NOT NULL,
    tag_mutability     TEXT NOT NULL,
    mutability_filters TEXT,              -- JSON list, as given to CreateRepository
    scan_on_push       INTEGER NOT NULL,
    encryption_type    TEXT NOT NULL,
    kms_key            TEXT,
    tags               TEXT NOT NULL      -- JSON list of {Key, Value}
);

-- A layer is a blob that CompleteLayerUpload finished in a repository.
CREATE TABLE IF NOT EXISTS layers (
    repository TEXT NOT NULL REFERENCES repositories(name) ON DELETE CASCADE,
    digest     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    media_type TEXT,                      -- learnt from the first manifest that uses it
    created_at REAL NOT NULL,
    PRIMARY KEY (repository, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS layers_by_digest ON layers(digest);

CREATE TABLE IF NOT EXISTS uploads (
    id         TEXT PRIMARY KEY,
    repository TEXT NOT NULL REFERENCES repositories(name) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    received   INTEGER NOT NULL DEFAULT 0 -- bytes fsynced to the upload file and accepted
);
-- When an upload last received a part (none yet: its uploads.created_at counts).
CREATE TABLE IF NOT EXISTS upload_activity (
    upload_id    TEXT PRIMARY KEY REFERENCES uploads(id) ON DELETE CASCADE,
    last_part_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS upload_parts (
    upload_id  TEXT NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    number     INTEGER NOT NULL,
    first_byte INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    PRIMARY KEY (upload_id, number)
) WITHOUT ROWID;

-- id orders images by push time (ECR lists in no lexical order).
CREATE TABLE IF NOT EXISTS images (
    id                  INTEGER PRIMARY KEY,
    repository          TEXT NOT NULL REFERENCES repositories(name) ON DELETE CASCADE,
    digest              TEXT NOT NULL,
    manifest            TEXT NOT NULL,    -- exactly as pushed
    media_type          TEXT NOT NULL,
    artifact_media_type TEXT,             -- the config's mediaType
    artifact_type       TEXT,             -- artifactType, else the config's mediaType
    subject             TEXT,
    annotations         TEXT,             -- JSON object or NULL
    size                INTEGER NOT NULL, -- imageSizeInBytes
    manifest_size       INTEGER NOT NULL, -- bytes of the UTF-8 manifest
    pushed_at           REAL NOT NULL,
    UNIQUE (repository, digest)
);
CREATE INDEX IF NOT EXISTS images_by_subject ON images(repository, subject);

CREATE TABLE IF NOT EXISTS image_tags (
    repository TEXT NOT NULL,
    tag        TEXT NOT NULL,
    image_id   INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tagged_at  REAL NOT NULL,
    PRIMARY KEY (repository, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS image_tags_by_image ON image_tags(image_id);

-- What an image references: 'blob' (config, layers) or 'manifest' (index children).
CREATE TABLE IF NOT EXISTS image_refs (
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    kind     TEXT NOT NULL,
    target   TEXT NOT NULL,
    PRIMARY KEY (image_id, kind, target)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS image_refs_by_target ON image_refs(target, kind);

CREATE TABLE IF NOT EXISTS auth_tokens (
    password      TEXT PRIMARY KEY,
    access_key_id TEXT,
    region        TEXT,
    registry_id   TEXT NOT NULL,
    expires_at    REAL NOT NULL
);

-- Documents kept per repository (documents.py): its repository policy, lifecycle policy and
-- last lifecycle preview, catalog data (ECR Public). They go with the repository.
CREATE TABLE IF NOT EXISTS repository_documents (
    repository TEXT NOT NULL REFERENCES repositories(name) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    body       TEXT NOT NULL,             -- JSON
    updated_at REAL NOT NULL,
    PRIMARY KEY (repository, kind)
) WITHOUT ROWID;

-- Registry-wide documents (registry_documents.py): pull through cache rules and repository
-- creation templates (one per prefix), account settings, the registry policy, scanning,
-- replication and signing configurations.
CREATE TABLE IF NOT EXISTS registry_documents (
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    body       TEXT NOT NULL,             -- JSON
    updated_at REAL NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;

-- When a pull through cache repository last asked its upstream which image a tag names
-- (actions/pull_through.py). Goes with the repository.
CREATE TABLE IF NOT EXISTS pull_through_checks (
    repository TEXT NOT NULL REFERENCES repositories(name) ON DELETE CASCADE,
    tag        TEXT NOT NULL,
    checked_at REAL NOT NULL,
    PRIMARY KEY (repository, tag)
) WITHOUT ROWID;

-- When an image was last pulled (pull_times.py). Goes with it.
CREATE TABLE IF NOT EXISTS image_pulls (
    image_id  INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
    pulled_at REAL NOT NULL
);

-- What an image carries besides its manifest: storage class and last scan. Goes with it.
CREATE TABLE IF NOT EXISTS image_states (
    image_id      INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
    storage_class TEXT NOT NULL DEFAULT 'STANDARD', -- STANDARD or ARCHIVE
    archived_at   REAL,
    scanned_at    REAL                            -- StartImageScan (an empty finding set)
);

-- When an archived image was last restored (ImageDetail.lastActivatedAt). Goes with it.
CREATE TABLE IF NOT EXISTS image_restores (
    image_id    INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
    restored_at REAL NOT NULL
);

-- Where an image was replicated to (replicator.py): one row per destination, gone with the
-- image, so a status never outlives it nor reappears for a later push of the same digest.
CREATE TABLE IF NOT EXISTS image_replications (
    image_id     INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    registry_id  TEXT NOT NULL,
    region       TEXT NOT NULL,
    position     INTEGER NOT NULL,        -- the destination's rank in the configuration
    status       TEXT NOT NULL,           -- IN_PROGRESS, COMPLETE or FAILED
    failure_code TEXT,
    PRIMARY KEY (image_id, registry_id, region)
) WITHOUT ROWID;

-- Statuses an earlier version kept as registry documents, which outlived their images.
DELETE FROM registry_documents WHERE kind = 'replication-status';

CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Database:
    """An SQLite file whose queries run, one at a time, on a thread of their own."""

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        self.path = path
        self.durable = durable
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecr-emulator-db")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self._submit(self._open)

    async def close(self) -> None:
        await self._submit(self._close)
        self._executor.shutdown(wait=True)

    async def read(self, fn: Callable[Concatenate[sqlite3.Connection, P], T],
                   *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` outside any transaction."""
        return await self._submit(lambda: fn(self._connection(), *args, **kwargs))

    async def write(self, fn: Callable[Concatenate[sqlite3.Connection, P], T],
                    *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` in a transaction: committed (and durable) or rolled back."""
        return await self._submit(lambda: self.transact(fn, *args, **kwargs))

    def transact(self, fn: Callable[Concatenate[sqlite3.Connection, P], T],
                 *args: P.args, **kwargs: P.kwargs) -> T:
        """``write`` for code already on the database thread."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn, *args, **kwargs)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def _submit(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: commits survive a killed process, not a power cut.
        conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.executescript(SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                     (str(SCHEMA_VERSION),))
        self._conn = conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def rows_in(db: sqlite3.Connection, query: str, values: Sequence[object],
            *before: object) -> Iterator[Any]:
    """The rows of ``query`` (its ``{marks}`` the placeholders of an ``IN`` list) for every
    one of ``values``, asked 500 at a time (SQLite bounds a statement's parameters);
    ``before`` are the parameters ahead of the list."""
    for start in range(0, len(values), 500):
        chunk = values[start:start + 500]
        yield from db.execute(query.format(marks=",".join("?" * len(chunk))), (*before, *chunk))
