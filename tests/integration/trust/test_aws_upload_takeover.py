"""``auth.mode: aws``: an upload session is state the gateway keeps for the identity that
opened it. Knowing its id (upload ids show in access logs), another identity whose IAM
rules refuse it the repository learns nothing of it and changes nothing in it: its status,
a chunk, its closing PUT and its cancellation are answered as for an unknown upload, or
as ECR answers that identity. The owner's upload is untouched and completes. An identity
ECR lets push there (temporary keys renewed mid-upload have another key id) continues it,
once ECR said so with its own keys."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.auth.helpers import basic
from tests.integration.state.conftest import redis_server, redis_state, replica
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer

__all__ = ["redis_server"]  # the fixture, for the replicas' test

RUN = uuid.uuid4().hex[:8].upper()
OWNER = (f"AKIDOWNER{RUN}", f"secret-owner-{uuid.uuid4().hex}")
OUTSIDER = (f"AKIDOUTSIDER{RUN}", f"secret-outsider-{uuid.uuid4().hex}")
RENEWED = (f"AKIDRENEWED{RUN}", f"secret-renewed-{uuid.uuid4().hex}")


@pytest.fixture(scope="module")
def keys(upstream: EmulatorProcess) -> Iterator[None]:
    upstream.add_key(*OWNER)
    upstream.add_key(*OUTSIDER)
    upstream.add_key(*RENEWED)
    upstream.control("PUT", "policies", {
        OWNER[0]: [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}],
        RENEWED[0]: [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}],
        OUTSIDER[0]: [{"Effect": "Allow", "Action": "ecr:GetAuthorizationToken"}]})
    yield


def _at(location: str, digest: str) -> str:
    return f"{location}&digest={digest}" if "?" in location else f"{location}?digest={digest}"


async def test_an_identity_iam_refuses_cannot_touch_anothers_upload(
        upstream: EmulatorProcess, keys: None, tmp_path: Path,
        session: aiohttp.ClientSession) -> None:
    with GatewayProcess(tmp_path / "gw", {"auth": {"mode": "aws"}},
                        upstream_url=upstream.url) as gw:
        await _attack(upstream, session, gw.url, gw.url)


async def test_nor_through_another_replica(
        upstream: EmulatorProcess, keys: None, tmp_path: Path, redis_server: RedisServer,
        session: aiohttp.ClientSession) -> None:
    state = redis_state(redis_server)
    with replica(tmp_path / "a", upstream, state, auth={"mode": "aws"}) as a, \
            replica(tmp_path / "b", upstream, state, auth={"mode": "aws"}) as b:
        await _attack(upstream, session, a.url, b.url, b.data_dir / "staging" / "spool")


async def _attack(upstream: EmulatorProcess, session: aiohttp.ClientSession, opened_at: str,
                  attacked_at: str, spools: Path | None = None) -> None:
    """The owner opens an upload at ``opened_at``; the others use it at ``attacked_at``
    (whose ``spools`` get no copy of the owner's bytes for the outsider)."""
    owner, outsider, renewed = basic(*OWNER), basic(*OUTSIDER), basic(*RENEWED)
    name = f"private/app-{os.urandom(3).hex()}"
    data = os.urandom(3000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with session.post(f"{opened_at}/v2/{name}/blobs/uploads/", headers=owner) as r:
        assert r.status == 202, await r.text()
    chunk = {"Content-Type": "application/octet-stream", "Content-Range": "0-999"}
    async with session.patch(opened_at + r.headers["Location"], data=data[:1000],
                             headers={**owner, **chunk}) as r:
        assert r.status == 202
        path = r.headers["Location"]

    there = attacked_at + path
    attempts = [session.get(there, headers=outsider),
                session.patch(there, data=b"x" * 10, headers={
                    **outsider, "Content-Type": "application/octet-stream",
                    "Content-Range": "1000-1009"}),
                session.put(_at(there, digest), data=data[1000:], headers=outsider),
                session.delete(there, headers=outsider)]
    for attempt in attempts:
        async with attempt as r:
            body = await r.read()
            assert r.status == 404 and b"BLOB_UPLOAD_UNKNOWN" in body, \
                (r.method, r.status, body[:300])
    if spools is not None:
        assert not (spools / path.split("?")[0].rsplit("/", 1)[-1]).exists()
    # ECR was asked with the outsider's own keys, and refused them.
    asked = [e for e in upstream.requests("InitiateLayerUpload")
             if e.get("access_key_id") == OUTSIDER[0]]
    assert asked and {e["outcome"] for e in asked} == {"AccessDeniedException"}

    async with session.get(opened_at + path, headers=owner) as r:
        assert r.status == 204 and r.headers["Range"] == "0-999"
    proven = len(upstream.requests("InitiateLayerUpload"))
    chunk = {"Content-Type": "application/octet-stream", "Content-Range": "1000-1999"}
    async with session.patch(there, data=data[1000:2000], headers={**renewed, **chunk}) as r:
        assert r.status == 202, await r.text()
    async with session.get(there, headers=renewed) as r:
        assert r.status == 204 and r.headers["Range"] == "0-1999"
    proofs = [e for e in upstream.requests("InitiateLayerUpload")[proven:]
              if e.get("access_key_id") == RENEWED[0]]
    assert len(proofs) == 1  # proven once, then trusted for a while
    async with session.put(_at(opened_at + path, digest), data=data[2000:],
                           headers=owner) as r:
        assert r.status == 201, await r.text()
    async with session.get(f"{opened_at}/v2/{name}/blobs/{digest}", headers=owner) as r:
        assert r.status == 200 and await r.read() == data


async def test_a_withdrawn_right_to_push_ends_within_the_revalidation_bound(
        upstream: EmulatorProcess, keys: None, tmp_path: Path,
        session: aiohttp.ClientSession) -> None:
    """An identity ECR let push continues another's upload; IAM then withdraws its right to
    push. Past ``cache.manifest_revalidate_seconds`` (2 s here), not the minute a proof used
    to be trusted, it is asked again with its own keys and the upload is unknown to it."""
    withdrawn = (f"AKIDWITHDRAWN{RUN}", f"secret-withdrawn-{uuid.uuid4().hex}")
    upstream.add_key(*withdrawn)
    policies = upstream.control("GET", "policies")["policies"]
    upstream.control("PUT", "policies", {**policies, withdrawn[0]: [
        {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]})
    owner, other = basic(*OWNER), basic(*withdrawn)
    name = f"private/app-{os.urandom(3).hex()}"
    config = {"auth": {"mode": "aws"}, "cache": {"manifest_revalidate_seconds": 2}}
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
        async with session.post(f"{gw.url}/v2/{name}/blobs/uploads/", headers=owner) as r:
            assert r.status == 202, await r.text()
            there = gw.url + r.headers["Location"]
        async with session.get(there, headers=other) as r:
            assert r.status == 204, await r.text()  # proven with its own keys
        upstream.control("PUT", "policies", {**policies, withdrawn[0]: [
            {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken"}]})
        await asyncio.sleep(3)
        chunk = {"Content-Type": "application/octet-stream", "Content-Range": "0-9"}
        async with session.patch(there, data=b"x" * 10, headers={**other, **chunk}) as r:
            status, body = r.status, await r.read()
        async with session.get(there, headers=owner) as r:
            assert r.status == 204 and r.headers.get("Range") in (None, "0-0"), \
                (r.status, r.headers.get("Range"))
    assert status == 404 and b"BLOB_UPLOAD_UNKNOWN" in body, (status, body[:300])
