"""``auth.mode: aws``: each identity has its own cached view of a repository, but a change
made through the gateway (a tag moved, an image deleted, a tag added) is one to the
repository: every other identity's view of it is dropped at once, on this replica and on
the others (told through Redis), not served stale for the caches' lifetimes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest

from tests.integration.auth.helpers import basic
from tests.integration.state.conftest import redis_server, redis_state, replica
from tests.support.emulator import EmulatorProcess, writer_and_reader
from tests.support.gateway import GatewayProcess
from tests.support.oci import OCI_MANIFEST, OciClient

__all__ = ["redis_server"]  # the fixture

T = TypeVar("T")
# Well within the caches' minute here: a notice between replicas takes milliseconds.
SEEN_WITHIN = 1.5


async def _soon(read: Callable[[], Awaitable[T]], expected: T) -> T:
    """What ``read`` answers once it answers ``expected``, or after SEEN_WITHIN seconds."""
    deadline = time.monotonic() + SEEN_WITHIN
    for _ in range(100):
        answer = await read()
        if answer == expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    return answer


async def _tag_digest(session: aiohttp.ClientSession, url: str) -> tuple[int, str | None]:
    async with session.get(url, headers={"Accept": OCI_MANIFEST}) as r:
        await r.read()
        return r.status, r.headers.get("Docker-Content-Digest")


async def _tags(session: aiohttp.ClientSession, url: str) -> list[str]:
    async with session.get(url) as r:
        assert r.status == 200, await r.text()
        return list((await r.json())["tags"])


@pytest.mark.parametrize("replicas", [1, 2])
async def test_one_identitys_changes_reach_anothers_cached_view(
        upstream: EmulatorProcess, tmp_path: Path, request: pytest.FixtureRequest,
        replicas: int) -> None:
    writer, reader = writer_and_reader(upstream)
    # Kept for a minute: without the change reaching them, the reader's answers stay stale.
    config = {"auth": {"mode": "aws"},
              "cache": {"tag_ttl_seconds": 60, "manifest_revalidate_seconds": 60}}
    with contextlib.ExitStack() as stack:
        if replicas == 1:
            one = stack.enter_context(GatewayProcess(tmp_path / "gw", config,
                                                     upstream_url=upstream.url))
            written_at = read_at = one.url
        else:
            state = redis_state(request.getfixturevalue("redis_server"))
            written_at, read_at = (stack.enter_context(replica(
                tmp_path / label, upstream, state, **config)).url for label in "ab")
        async with aiohttp.ClientSession(headers=basic(*writer)) as a, \
                aiohttp.ClientSession(headers=basic(*reader)) as b:
            name = f"shared/{uuid.uuid4().hex[:8]}"
            pusher = OciClient(a, written_at)
            first, _ = await pusher.push_image(name, "latest", [os.urandom(1000)])
            tag_url = f"{read_at}/v2/{name}/manifests/latest"
            list_url = f"{read_at}/v2/{name}/tags/list"
            assert await _tag_digest(b, tag_url) == (200, first)
            assert await _tags(b, list_url) == ["latest"]

            # The writer moves the tag and adds another: the reader sees both at once.
            second, _ = await pusher.push_image(name, "latest", [os.urandom(1000)])
            await pusher.push_image(name, "v2", [os.urandom(1000)])
            assert await _soon(lambda: _tag_digest(b, tag_url), (200, second)) == (200, second)
            assert await _soon(lambda: _tags(b, list_url), ["latest", "v2"]) == ["latest", "v2"]

            # The writer deletes the image: the reader's tag and manifest answers go with it.
            async with a.delete(f"{written_at}/v2/{name}/manifests/{second}") as r:
                assert r.status == 202, await r.text()
            gone = (404, None)
            assert await _soon(lambda: _tag_digest(b, tag_url), gone) == gone
            by_digest = f"{read_at}/v2/{name}/manifests/{second}"
            assert await _soon(lambda: _tag_digest(b, by_digest), gone) == gone
