"""Private image replication: an image pushed into a repository that a rule of the registry's
replication configuration covers is copied to each of the rule's destinations (another
region and/or account held by the same emulator process, see registries.py).

As the ECR User Guide describes it: only content pushed after replication is configured is
replicated; the repository keeps its name in the destination, which is created from the
destination's repository creation template for REPLICATION (the longest matching prefix,
else ROOT, else ECR's defaults) when it does not exist; a destination in another account
must grant the source account ``ecr:ReplicateImage`` in its registry permissions policy.
A rule with ``repositoryFilters`` (PREFIX_MATCH) covers the repositories whose name starts
with one of them; one without covers every repository.

Each PutImage records IN_PROGRESS for every destination at once, then copies in the
background: the layers (hard links into the destination's blob store), an index's child
manifests, the manifest byte-exact and the pushed tag. Each destination's outcome is kept
with the source image (``image_replications`` rows, deleted with the image: a copy ending
after its image was deleted records nothing) for
DescribeImageReplicationStatus: COMPLETE, or FAILED with ``failureCode`` the name of the ECR
exception the copy met (AccessDeniedException without the grant,
ImageTagAlreadyExistsException for an immutable tag already elsewhere in the destination…).
Deletions are not replicated.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from ecr_emulator import image_store, manifests, repository_policy, store
from ecr_emulator import registry_documents as registry
from ecr_emulator.actions import templates
from ecr_emulator.errors import AwsError
from ecr_emulator.state import EmulatorState

log = logging.getLogger(__name__)

def covers(rule: dict[str, Any], repository: str) -> bool:
    filters = rule.get("repositoryFilters") or []
    return not filters or any(repository.startswith(f["filter"]) for f in filters
                              if f.get("filterType", "PREFIX_MATCH") == "PREFIX_MATCH")


def destinations(configuration: dict[str, Any] | None,
                 repository: str) -> list[tuple[str, str]]:
    """The (registryId, region) pairs ``repository``'s images replicate to, in rule order."""
    found: dict[tuple[str, str], None] = {}
    for rule in (configuration or {}).get("rules", []):
        if covers(rule, repository):
            for destination in rule.get("destinations", []):
                found[(destination["registryId"], destination["region"])] = None
    return list(found)


def statuses(db: sqlite3.Connection, image_id: int) -> list[dict[str, str]]:
    """The recorded outcome per destination of replicating image ``image_id``."""
    rows = db.execute("SELECT registry_id, region, status, failure_code FROM"
                      " image_replications WHERE image_id = ? ORDER BY position", (image_id,))
    out = []
    for row in rows:
        entry = {"region": row["region"], "registryId": row["registry_id"],
                 "status": row["status"]}
        if row["failure_code"] is not None:
            entry["failureCode"] = row["failure_code"]
        out.append(entry)
    return out


def _start(db: sqlite3.Connection, repository: str, digest: str,
           targets: list[tuple[str, str]]) -> int | None:
    """Mark the copies of the image just pushed IN_PROGRESS; its id (None if it is gone)."""
    image = image_store.find_by_digest(db, repository, digest)
    if image is None:
        return None
    for position, (registry_id, region) in enumerate(targets):
        db.execute("INSERT OR REPLACE INTO image_replications (image_id, registry_id, region,"
                   " position, status) VALUES (?, ?, ?, ?, 'IN_PROGRESS')",
                   (image.id, registry_id, region, position))
    return image.id


def _finish(db: sqlite3.Connection, image_id: int, registry_id: str, region: str,
            failure: str | None) -> None:
    """A copy's outcome, kept only while its image exists (a deleted image took its rows)."""
    db.execute("UPDATE image_replications SET status = ?, failure_code = ? WHERE image_id = ?"
               " AND registry_id = ? AND region = ?",
               ("FAILED" if failure else "COMPLETE", failure, image_id, registry_id, region))


async def after_push(state: EmulatorState, repository: str, digest: str,
                     tag: str | None) -> None:
    """PutImage's follow-up: mark the copies IN_PROGRESS and start them."""
    if state.registries is None:
        return
    configuration = await state.db.read(registry.get, registry.REPLICATION)
    targets = destinations(configuration, repository)
    if not targets:
        return
    image_id = await state.db.write(_start, repository, digest, targets)
    if image_id is None:
        return
    for registry_id, region in targets:
        state.spawn(_replicate(state, repository, digest, image_id, tag, registry_id, region))


async def _replicate(source: EmulatorState, repository: str, digest: str, image_id: int,
                     tag: str | None, registry_id: str, region: str) -> None:
    failure: str | None = None
    try:
        assert source.registries is not None
        destination = await source.registries.get(registry_id, region)
        await copy_image(source, destination, repository, digest, tag)
    except AwsError as exc:
        failure = exc.name
    except Exception:  # recorded as FAILED; the log says why
        log.exception("replicating %s@%s to %s/%s failed", repository, digest, registry_id,
                      region)
        failure = "ServerException"
    await source.db.write(_finish, image_id, registry_id, region, failure)


def _granted(destination: EmulatorState, policy_text: str | None, account_id: str) -> bool:
    """Whether the destination's registry policy lets ``account_id`` replicate into it."""
    if destination.account_id == account_id:
        return True
    if policy_text is None:
        return False
    policy = repository_policy.parse(policy_text)
    verdicts = {policy.decide(principal, "", "ecr:ReplicateImage")
                for principal in (account_id, f"arn:aws:iam::{account_id}:root")}
    return "deny" not in verdicts and "allow" in verdicts


async def copy_image(source: EmulatorState, destination: EmulatorState, repository: str,
                     digest: str, tag: str | None) -> None:
    """Copy image ``digest`` of ``repository`` (its children, layers and ``tag``) from
    ``source`` into ``destination``; the AwsError of the step that failed otherwise."""
    policy = await destination.db.read(registry.get, registry.REGISTRY_POLICY)
    if not _granted(destination, policy, source.account_id):
        raise AwsError("AccessDeniedException",
                       f"registry {destination.account_id} does not grant "
                       f"{source.account_id} ecr:ReplicateImage")
    fetched = await source.db.read(_closure, repository, digest)
    for layer in {d: s for _, _, blobs in fetched for d, s in blobs.items()}.items():
        await _copy_blob(source, destination, repository, *layer)
    await destination.db.write(_store, repository, fetched, tag,
                               registry_id=destination.account_id, now=time.time(),
                               max_repositories=destination.settings.max_repositories,
                               max_images=destination.settings.max_images_per_repository)


_Fetched = list[tuple[str, str, dict[str, int]]]  # (manifest, media type, {blob: size})


def _closure(db: sqlite3.Connection, repository: str, digest: str) -> _Fetched:
    """The image and the child manifests it needs, children first, with their blobs."""
    image = image_store.find_by_digest(db, repository, digest)
    if image is None:
        raise AwsError("ImageNotFoundException", f"image {digest} is gone from {repository}")
    text = image_store.manifest_of(db, image.id)
    manifest = manifests.parse(text, image.media_type)
    out: _Fetched = []
    for child in manifest.children:
        out += _closure(db, repository, child)
    needed = [d.digest for d in manifest.blobs if d.distributable]
    layers = store.get_layers(db, repository, needed)
    out.append((text, image.media_type, {d: layers[d].size for d in needed if d in layers}))
    return out


async def _copy_blob(source: EmulatorState, destination: EmulatorState, repository: str,
                     digest: str, size: int) -> None:
    async with destination.digest_lock(digest):
        if not await asyncio.to_thread(destination.blobs.has_blob, digest):
            temp_id = f"replica-{uuid.uuid4()}"  # removed at start-up if the process dies
            try:
                await asyncio.to_thread(_link, source.blobs.blob_path(digest),
                                        destination.blobs.upload_path(temp_id))
                await asyncio.to_thread(destination.blobs.publish, temp_id, digest, size)
            finally:
                await asyncio.to_thread(destination.blobs.discard_upload, temp_id)
        await destination.db.write(_add_layer, repository, digest, size, time.time(),
                                   registry_id=destination.account_id,
                                   max_repositories=destination.settings.max_repositories)


def _link(source: Path, target: Path) -> None:
    """A hard link (same file system), else a streamed copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, target)


def _ensure_repository(db: sqlite3.Connection, repository: str, *, registry_id: str,
                       max_repositories: int, now: float) -> None:
    if not store.repository_exists(db, repository):
        templates.create_from_template(db, repository, "REPLICATION", registry_id=registry_id,
                                       max_repositories=max_repositories, now=now)


def _add_layer(db: sqlite3.Connection, repository: str, digest: str, size: int, now: float,
               *, registry_id: str, max_repositories: int) -> None:
    _ensure_repository(db, repository, registry_id=registry_id,
                       max_repositories=max_repositories, now=now)
    db.execute("INSERT OR IGNORE INTO layers (repository, digest, size, created_at)"
               " VALUES (?, ?, ?, ?)", (repository, digest, size, now))


def _store(db: sqlite3.Connection, repository: str, fetched: _Fetched, tag: str | None, *,
           registry_id: str, now: float, max_repositories: int, max_images: int) -> None:
    """PutImage in the destination: the children untagged, the image with ``tag``."""
    _ensure_repository(db, repository, registry_id=registry_id,
                       max_repositories=max_repositories, now=now)
    for index, (text, media_type, _) in enumerate(fetched):
        last = index == len(fetched) - 1
        manifest = manifests.parse(text, media_type)
        digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        try:
            image_store.put_image(db, repository=repository, registry_id=registry_id,
                                  digest=digest, text=text, manifest=manifest,
                                  tag=tag if last else None, now=now, max_images=max_images)
        except AwsError as exc:
            if exc.name != "ImageAlreadyExistsException":  # already there: nothing to copy
                raise

