"""Queries on what a repository carries besides images: JSON documents and resource tags.

A document is one JSON value per (repository, kind): ``policy`` (SetRepositoryPolicy),
``lifecycle`` and ``lifecycle-preview`` (ECR lifecycle policies), ``catalog`` (ECR Public
catalog data). Deleting the repository deletes its documents. Registry-wide values (ECR
Public's registry display name) live in the ``meta`` table. Like store.py, every function
takes the connection first and runs on the database thread.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from ecr_emulator import store

POLICY = "policy"
LIFECYCLE = "lifecycle"
LIFECYCLE_PREVIEW = "lifecycle-preview"
CATALOG = "catalog"


def get(db: sqlite3.Connection, repository: str, kind: str) -> Any:
    """The document, or None (whether or not the repository exists)."""
    row = db.execute("SELECT body FROM repository_documents WHERE repository = ? AND kind = ?",
                     (repository, kind)).fetchone()
    return None if row is None else orjson.loads(row[0])


def put(db: sqlite3.Connection, repository: str, kind: str, body: Any, now: float, *,
        registry_id: str) -> None:
    store.get_repository(db, repository, registry_id)  # RepositoryNotFoundException
    db.execute("INSERT OR REPLACE INTO repository_documents (repository, kind, body, updated_at)"
               " VALUES (?, ?, ?, ?)", (repository, kind, orjson.dumps(body).decode(), now))


def delete(db: sqlite3.Connection, repository: str, kind: str) -> Any:
    """Remove the document and return what it was (None if there was none)."""
    body = get(db, repository, kind)
    db.execute("DELETE FROM repository_documents WHERE repository = ? AND kind = ?",
               (repository, kind))
    return body


def repositories_with(db: sqlite3.Connection, kind: str) -> list[str]:
    rows = db.execute("SELECT repository FROM repository_documents WHERE kind = ?"
                      " ORDER BY repository", (kind,))
    return [row[0] for row in rows]


def set_tags(db: sqlite3.Connection, repository: str, tags: list[dict[str, str]]) -> None:
    db.execute("UPDATE repositories SET tags = ? WHERE name = ?",
               (orjson.dumps(tags).decode(), repository))


def get_meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
