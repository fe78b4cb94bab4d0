"""A DELETE that ECR refuses (the caller denied, no such image, no such repository) changes
nothing: no reader, on this replica or another sharing Redis, loses the download URLs and
membership kept for the repository (each lost one costs ECR calls again), however many
such DELETEs a caller allowed to send them aims at it or at made-up names."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.integration.trust.test_images_gone_behind_the_gateway import (
    CACHE,
    _gateways,
    _pushed_and_served,
    _status,
    redis_server,
)
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, digest_of

__all__ = ["redis_server"]  # the fixture

REFUSALS = {"denied": 403, "no such image": 404, "no such repository": 404}


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("refusal", list(REFUSALS))
async def test_a_refused_delete_costs_no_reader_its_blob_answers(
        upstream: EmulatorProcess, tmp_path: Path, request: pytest.FixtureRequest,
        replicas: int, refusal: str) -> None:
    with _gateways(upstream, tmp_path, request, replicas, "redirect", CACHE) as (learns, serves):
        async with aiohttp.ClientSession() as session:
            name, _, blob = await _pushed_and_served(session, learns, serves, "redirect")
            aimed = f"gone/{uuid.uuid4().hex[:8]}" if refusal == "no such repository" else name
            for _ in range(3):
                made_up = digest_of(os.urandom(32))
                if refusal == "denied":
                    upstream.inject_fault("BatchDeleteImage", "AccessDeniedException")
                async with session.delete(f"{learns}/v2/{aimed}/manifests/{made_up}") as r:
                    assert r.status == REFUSALS[refusal], await r.text()
            await asyncio.sleep(0.5)  # the time a notice would take to reach the other replica
            upstream.clear_requests()
            assert await _status(session, "GET", blob) == 307
            assert [e["action"] for e in upstream.requests() if e.get("repository") == name] == []


async def test_a_delete_ecr_fails_on_counts_as_one_only_in_a_repository_held(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """ECR failing (the delete may have landed): the repository's answers are dropped, as
    for a deletion, but a made-up name's costs nothing."""
    config = {"cache": CACHE,  # each call reaches ECR, and fails soon
              "upstream": {"breaker_failures": 0, "retry_budget_seconds": 1}}
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
        learns = gw.url
        async with aiohttp.ClientSession() as session:
            name, image, blob = await _pushed_and_served(session, learns, learns, "redirect")
            for aimed in (f"gone/{uuid.uuid4().hex[:8]}", name):
                upstream.inject_fault("BatchDeleteImage", "ServerException", count=100)
                try:
                    async with session.delete(f"{learns}/v2/{aimed}/manifests/{image}") as r:
                        assert r.status >= 500, await r.text()
                finally:
                    upstream.clear_faults()
                upstream.clear_requests()
                assert await _status(session, "GET", blob) == 307
                asked = [e["action"] for e in upstream.requests() if e.get("repository") == name]
                assert asked == ([] if aimed != name else ["GetDownloadUrlForLayer"])


async def test_untagging_a_tag_ecr_does_not_have_changes_nothing(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """An untag of a made-up tag (404) leaves the repository's answers as they were: a tag
    read in flight meanwhile is kept, as it is without that untag."""
    with GatewayProcess(tmp_path / "push", upstream_url=upstream.url) as pusher, \
            GatewayProcess(tmp_path / "gw", {"cache": CACHE}, upstream_url=upstream.url) as gw:
        async with aiohttp.ClientSession() as session:
            name = f"gone/{uuid.uuid4().hex[:8]}"
            await OciClient(session, pusher.url).push_image(name, "v1", [os.urandom(3000)])
            upstream.control("POST", "faults", {"action": "BatchGetImage", "latency": 2.0,
                                                "count": 1})
            try:
                reading = asyncio.create_task(
                    _status(session, "GET", f"{gw.url}/v2/{name}/manifests/v1"))
                await asyncio.sleep(0.5)  # the read is waiting for ECR
                assert await _status(
                    session, "DELETE", f"{gw.url}/v2/{name}/manifests/made-up") == 404
                assert await reading == 200
            finally:
                upstream.clear_faults()
            upstream.clear_requests()
            assert await _status(session, "GET", f"{gw.url}/v2/{name}/manifests/v1") == 200
            assert [e["action"] for e in upstream.requests() if e.get("repository") == name] == []
