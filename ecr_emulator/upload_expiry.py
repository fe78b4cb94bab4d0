"""Uploads abandoned before CompleteLayerUpload end, and their files go.

ECR has no call that cancels a layer upload: a client that stops (a push interrupted, an
upload whose session a gateway dropped) leaves its parts behind, and without an end they
would stay on disk for ever. An upload that has received no part for ``upload_lifetime``
seconds (``ECR_EMULATOR_UPLOAD_LIFETIME``, default a day; 0: never) since its last part, or
its InitiateLayerUpload, is deleted with its file; UploadLayerPart and CompleteLayerUpload
naming it then get UploadNotFoundException, as for an upload id never issued. Every registry
of the process is swept, ECR Public's too, a few times per lifetime (at least once a
minute), and once at start for what outlived a stopped emulator.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from ecr_emulator import store
from ecr_emulator.background import every_registry, run_beside
from ecr_emulator.state import PUBLIC_STATE_KEY, STATE_KEY, EmulatorState

log = logging.getLogger(__name__)


async def expire(state: EmulatorState, lifetime: float) -> list[str]:
    """End the uploads of ``state`` idle for ``lifetime`` seconds; their ids."""
    before = time.time() - lifetime
    ended = []
    for upload_id, repository in await state.db.read(store.idle_uploads, before):
        # A part being written holds the lock; the check is made again once it is kept.
        async with state.upload_lock(upload_id):
            if not await state.db.write(store.expire_upload, upload_id, before):
                continue
            state.hashes.pop(upload_id, None)
            # Deleted after the row: a crash in between leaves a file the start-up repair
            # removes, never a row without its bytes.
            await asyncio.to_thread(state.blobs.discard_upload, upload_id)
        ended.append(upload_id)
        state.request_log.record({
            "ts": time.time(), "repository": repository, "action": "UploadExpire",
            "outcome": "ok", "status": 200,
            "access_key_id": None, "region": None, "uploadId": upload_id})
    if ended:
        log.info("%d upload(s) idle for %.0f s expired", len(ended), lifetime)
    return ended


def sweep_interval(lifetime: float) -> float:
    """Often enough that an upload outlives its lifetime by at most a quarter of it."""
    return min(60.0, max(lifetime / 4, 0.5))


async def _schedule(states: list[EmulatorState], lifetime: float) -> None:
    while True:
        for state in states:
            for each in every_registry(state):
                try:
                    await expire(each, lifetime)
                except Exception:  # the next sweep tries again
                    log.exception("expiring idle uploads failed")
        await asyncio.sleep(sweep_interval(lifetime))


def install(app: web.Application) -> None:
    """The periodic sweep of every registry's idle uploads (after the states have started)."""

    def periodic(app: web.Application) -> Coroutine[Any, Any, None] | None:
        main = app[STATE_KEY]
        lifetime = main.settings.upload_lifetime
        public = app.get(PUBLIC_STATE_KEY)
        states = [main] if public is None else [main, public]
        return _schedule(states, lifetime) if lifetime > 0 else None

    run_beside(app, periodic)
