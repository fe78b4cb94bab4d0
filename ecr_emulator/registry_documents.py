"""Queries on registry-wide documents: one JSON value per (kind, key).

Kinds: ``ptc`` (pull through cache rules, keyed by ecrRepositoryPrefix), ``template``
(repository creation templates, keyed by prefix), ``setting`` (account settings, keyed by
name), ``exclusion`` (pull-time update exclusions, keyed by principal ARN) and the singletons
``registry-policy``, ``scanning``, ``replication``, ``signing`` (key ``""``). Like store.py,
every function takes the connection first and runs on the database thread.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

PULL_THROUGH = "ptc"
TEMPLATE = "template"
SETTING = "setting"
EXCLUSION = "exclusion"
REGISTRY_POLICY = "registry-policy"
SCANNING = "scanning"
REPLICATION = "replication"
SIGNING = "signing"


def get(db: sqlite3.Connection, kind: str, key: str = "") -> Any:
    row = db.execute("SELECT body FROM registry_documents WHERE kind = ? AND key = ?",
                     (kind, key)).fetchone()
    return None if row is None else orjson.loads(row[0])


def put(db: sqlite3.Connection, kind: str, key: str, body: Any, now: float) -> None:
    db.execute("INSERT OR REPLACE INTO registry_documents (kind, key, body, updated_at)"
               " VALUES (?, ?, ?, ?)", (kind, key, orjson.dumps(body).decode(), now))


def insert(db: sqlite3.Connection, kind: str, key: str, body: Any, now: float) -> bool:
    """Store a new document; False (and nothing stored) if ``key`` already has one."""
    cur = db.execute("INSERT OR IGNORE INTO registry_documents (kind, key, body, updated_at)"
                     " VALUES (?, ?, ?, ?)", (kind, key, orjson.dumps(body).decode(), now))
    return cur.rowcount == 1


def delete(db: sqlite3.Connection, kind: str, key: str = "") -> Any:
    """Remove the document and return what it was (None if there was none)."""
    body = get(db, kind, key)
    db.execute("DELETE FROM registry_documents WHERE kind = ? AND key = ?", (kind, key))
    return body


def all_of(db: sqlite3.Connection, kind: str) -> list[tuple[str, Any]]:
    rows = db.execute("SELECT key, body FROM registry_documents WHERE kind = ? ORDER BY key",
                      (kind,))
    return [(row[0], orjson.loads(row[1])) for row in rows]


def count(db: sqlite3.Connection, kind: str) -> int:
    (n,) = db.execute("SELECT count(*) FROM registry_documents WHERE kind = ?",
                      (kind,)).fetchone()
    return int(n)
