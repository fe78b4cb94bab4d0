"""Lifecycle policies applied: the images each repository's policy expires are deleted, those
it transitions are archived.

ECR applies a repository's lifecycle policy within 24 hours of it being set, and then
periodically. The emulator applies every policy each ``lifecycle_interval`` seconds
(``ECR_EMULATOR_LIFECYCLE_INTERVAL``, default 3600; 0 turns the schedule off) and whenever a
test asks: ``POST /_emulator/lifecycle/run`` (``?repository=NAME`` for one repository)
applies them at once (``&account=…&region=…``: another registry of the process) and
answers what it expired::

    {"expired": {"team/app": [{"imageDigest": "sha256:...", "imageTags": ["v1"],
                               "appliedRulePriority": 1, "action": "EXPIRE"}]}}

An expired image is deleted as BatchDeleteImage deletes it by digest (with all its tags), in
the same transaction that evaluates the policy; a transitioned one (``"action":
"TRANSITION"``) is archived as UpdateImageStorageClass archives it, index children included.
``lastEvaluatedAt`` (GetLifecyclePolicy) records the run. Each deletion is in the request
log as ``LifecycleExpire``, each archiving as ``LifecycleTransition``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ecr_emulator import documents, image_states, image_store, pull_times, store
from ecr_emulator.background import every_registry, run_beside
from ecr_emulator.errors import AwsError
from ecr_emulator.state import STATE_KEY, EmulatorState
from ecr_model import lifecycle_policy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Judged:
    """An image the rules act on, with what PreviewResult and the run report show."""

    digest: str
    tags: list[str]
    pushed_at: float
    rule_priority: int
    action: str = "expire"  # or "transition"
    storage_class: str = "STANDARD"  # the image's, before the action
    image_id: int = 0


def judge(db: sqlite3.Connection, repository: str, rules: list[lifecycle_policy.Rule],
          now: float) -> list[Judged]:
    """What ``rules`` would do in ``repository`` now, oldest image first."""
    rows = db.execute("SELECT id, digest, pushed_at FROM images WHERE repository = ?"
                      " ORDER BY id", (repository,)).fetchall()
    tags = image_store.tags_of(db, [row["id"] for row in rows])
    referenced = {row[0] for row in db.execute(
        "SELECT r.target FROM image_refs r JOIN images i ON i.id = r.image_id"
        " WHERE i.repository = ? AND r.kind = 'manifest'", (repository,))}
    states = image_states.states(db, repository)
    pulled = pull_times.of(db, [row["id"] for row in rows])
    candidates = [lifecycle_policy.Candidate(
        row["id"], tuple(tags[row["id"]]), row["pushed_at"], row["id"],
        row["digest"] in referenced,
        storage_class=states.get(row["id"], ("STANDARD", None))[0].lower(),
        pulled_at=pulled.get(row["id"]),
        archived_at=states.get(row["id"], ("STANDARD", None))[1]) for row in rows]
    by_id = {row["id"]: row for row in rows}
    judged = []
    for expiry in lifecycle_policy.evaluate(rules, candidates, now):
        row = by_id[expiry.key]
        judged.append(Judged(row["digest"], tags[row["id"]], row["pushed_at"],
                             expiry.rule_priority, expiry.action,
                             states.get(row["id"], ("STANDARD", None))[0], row["id"]))
    return judged


def apply(db: sqlite3.Connection, repository: str, registry_id: str,
          now: float) -> list[Judged]:
    """Evaluate the repository's policy; delete what it expires and archive what it
    transitions (one transaction)."""
    policy = documents.get(db, repository, documents.LIFECYCLE)
    if policy is None:
        return []
    doomed = judge(db, repository, lifecycle_policy.parse(policy["text"]), now)
    for image in doomed:
        if image.action == "transition":
            image_states.set_with_children(db, repository, image.image_id, "ARCHIVE", now)
        else:
            image_store.batch_delete(db, repository, registry_id,
                                     [{"imageDigest": image.digest}])
    documents.put(db, repository, documents.LIFECYCLE, {**policy, "lastEvaluatedAt": now}, now,
                  registry_id=registry_id)
    return doomed


async def run(state: EmulatorState, repository: str | None = None) -> dict[str, list[Judged]]:
    """Apply the lifecycle policy of ``repository`` (None: of every repository having one)."""
    names = ([repository] if repository is not None
             else await state.db.read(documents.repositories_with, documents.LIFECYCLE))
    results: dict[str, list[Judged]] = {}
    for name in names:
        try:
            doomed = await state.db.write(apply, name, state.account_id, time.time())
        except lifecycle_policy.PolicyError:
            log.exception("the lifecycle policy of %s cannot be applied", name)
            continue
        results[name] = doomed
        for image in doomed:
            state.request_log.record({
                "ts": time.time(), "repository": name,
                "action": "LifecycleTransition" if image.action == "transition"
                else "LifecycleExpire",
                "outcome": "ok", "status": 200, "access_key_id": None, "region": None,
                "digest": image.digest, "rule": image.rule_priority})
    return results


def report(results: dict[str, list[Judged]]) -> dict[str, Any]:
    return {"expired": {name: [{"imageDigest": i.digest, "imageTags": i.tags,
                                "appliedRulePriority": i.rule_priority,
                                "action": i.action.upper()} for i in doomed]
                        for name, doomed in results.items()}}


async def _run_now(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    account, region = request.query.get("account"), request.query.get("region")
    if account or region:  # another registry of the process (registries.py)
        assert state.registries is not None
        other = state.registries.opened(account or state.account_id, region or state.region)
        if other is None:
            return web.json_response({"error": "no such registry"}, status=404)
        state = other
    repository = request.query.get("repository")
    if repository is not None and not await state.db.read(_exists, repository):
        return web.json_response({"error": f"no repository {repository!r}"}, status=404)
    return web.json_response(report(await run(state, repository)))


def _exists(db: sqlite3.Connection, name: str) -> bool:
    try:
        store.get_repository(db, name, "")
    except AwsError:
        return False
    return True


async def _schedule(state: EmulatorState) -> None:
    interval = state.settings.lifecycle_interval
    while True:
        await asyncio.sleep(interval)
        for each in every_registry(state):
            try:
                await run(each)
            except Exception:  # the next run tries again
                log.exception("applying lifecycle policies failed")


def install(app: web.Application) -> None:
    """The ``POST /_emulator/lifecycle/run`` route and the periodic run."""
    app.router.add_post("/_emulator/lifecycle/run", _run_now)

    def periodic(app: web.Application) -> Coroutine[Any, Any, None] | None:
        state = app[STATE_KEY]
        return _schedule(state) if state.settings.lifecycle_interval > 0 else None

    run_beside(app, periodic)
