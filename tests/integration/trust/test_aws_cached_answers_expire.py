"""``auth.mode: aws``: what the gateway keeps for an identity (a presigned download URL,
which blobs a repository holds, so a blob-cache hit needs no upstream call) is served no
longer than ``cache.manifest_revalidate_seconds`` after ECR last answered that identity. A
session token that expired or a deleted key (the identity ends: 401), or an IAM policy
that no longer allows the repository (403), then stops every read, not only those of
manifests, instead of letting the caller go on pulling blobs for the URLs' and the
membership's five minutes."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.auth.helpers import basic
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, digest_of

REVALIDATE = 2.0


async def _blob_status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url, allow_redirects=False) as r:
        await r.read()
        return r.status


@pytest.mark.parametrize("blobs", ["redirect", "proxy+cache"])
async def test_blobs_stop_with_the_keys_and_the_permission(
        upstream: EmulatorProcess, tmp_path: Path, blobs: str) -> None:
    run = uuid.uuid4().hex[:8].upper()
    temporary, token = f"ASIASHORT{run}", f"token-{uuid.uuid4().hex}"
    expires = time.time() + 6
    instant = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    secret = upstream.add_key(temporary, session_token=token, expiration=instant)
    lasting = (f"AKIDLASTING{run}", f"secret-{uuid.uuid4().hex}")
    upstream.add_key(*lasting)
    deleted = (f"AKIDDELETED{run}", f"secret-{uuid.uuid4().hex}")
    upstream.add_key(*deleted)
    policies: dict[str, Any] = upstream.control("GET", "policies")["policies"]
    allow_all = [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]
    upstream.control("PUT", "policies", {**policies, temporary: allow_all,
                                         lasting[0]: allow_all, deleted[0]: allow_all})
    mode: dict[str, Any] = {"mode": "redirect"} if blobs == "redirect" else {
        "mode": "proxy", "cache": {"path": str(tmp_path / "cache")}}
    config = {"auth": {"mode": "aws"}, "blobs": mode,
              "cache": {"manifest_revalidate_seconds": REVALIDATE}}
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
        async with aiohttp.ClientSession(headers=basic(temporary, f"{secret}:{token}")) as a, \
                aiohttp.ClientSession(headers=basic(*lasting)) as b, \
                aiohttp.ClientSession(headers=basic(*deleted)) as c:
            name = f"expiring/{uuid.uuid4().hex[:8]}"
            layer = os.urandom(4000)
            await OciClient(a, gw.url).push_image(name, "v1", [layer])
            url = f"{gw.url}/v2/{name}/blobs/{digest_of(layer)}"
            served = 307 if blobs == "redirect" else 200
            assert await _blob_status(a, url) == served
            assert await _blob_status(b, url) == served
            assert await _blob_status(c, url) == served
            upstream.remove_key(deleted[0])
            async with c.get(f"{gw.url}/v2/", headers=basic(f"AKIDNEW{run}", "x")) as r:
                assert r.status == 401  # the emulator reads its keys again
            upstream.control("PUT", "policies", {
                **policies, temporary: allow_all, deleted[0]: allow_all, lasting[0]: [
                    {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken"}]})
            await asyncio.sleep(max(expires, time.time() + REVALIDATE) + 1 - time.time())
            # Past the bound: ECR is asked with each caller's keys, and refuses them.
            before = len(upstream.requests())
            assert await _blob_status(a, url) == 401
            assert "ExpiredTokenException" in {e["outcome"]
                                               for e in upstream.requests()[before:]}
            assert await _blob_status(b, url) == 403
            before = len(upstream.requests())
            assert await _blob_status(c, url) == 401
            assert "UnrecognizedClientException" in {e["outcome"]
                                                     for e in upstream.requests()[before:]}
