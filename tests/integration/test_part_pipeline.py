"""The gateway holds at most PARTS_IN_MEMORY cut parts over all uploads: when ECR refuses
every part of many concurrent uploads, each upload still ends (with an error) instead of
waiting forever for a place, and afterwards every place is free again."""

from __future__ import annotations

import asyncio
import hashlib
import os

import aiohttp

from gateway.ecr.uploads import PARTS_IN_MEMORY
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

MiB = 1024 * 1024


async def _push(session: aiohttp.ClientSession, base: str, repo: str, data: bytes) -> int:
    """POST, one PATCH with the whole blob, PUT: the first status that is not a success."""
    async with session.post(f"{base}/v2/{repo}/blobs/uploads/") as answer:
        if answer.status != 202:
            return answer.status
        location = answer.headers["Location"]
    async with session.patch(f"{base}{location}", data=data,
                             headers={"Content-Type": "application/octet-stream"}) as answer:
        if answer.status != 202:
            return answer.status
        location = answer.headers["Location"]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with session.put(f"{base}{location}", params={"digest": digest}) as answer:
        return answer.status


async def test_refused_parts_never_starve_other_uploads(gateway: GatewayProcess,
                                                        upstream: EmulatorProcess,
                                                        repo: str) -> None:
    uploads = 2 * PARTS_IN_MEMORY  # each wants a place for a second part while refused
    data = [os.urandom(21 * MiB + i) for i in range(uploads)]
    async with aiohttp.ClientSession() as session:
        assert await _push(session, gateway.url, repo, os.urandom(MiB)) == 201  # repository
        upstream.inject_fault("UploadLayerPart", "LimitExceededException", count=10_000)
        try:
            statuses = await asyncio.wait_for(asyncio.gather(
                *(_push(session, gateway.url, repo, d) for d in data)), timeout=120)
        finally:
            upstream.clear_faults()
        assert all(status >= 400 for status in statuses), statuses
        # Every place was given back: as many uploads as there are places, all at once.
        statuses = await asyncio.wait_for(asyncio.gather(
            *(_push(session, gateway.url, repo, d) for d in data)), timeout=120)
        assert statuses == [201] * uploads
