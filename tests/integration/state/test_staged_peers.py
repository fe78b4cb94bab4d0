"""A blob read back right after its upload, before any manifest references it (ECR does not
serve it yet), is readable through every replica: the replica that staged it serves its
peers over an internal endpoint that only processes sharing the Redis can use."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import aiohttp
import pytest

from tests.integration.state.conftest import redis_state, replica_pair
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer

MiB = 1024 * 1024
OCTET = {"Content-Type": "application/octet-stream"}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def pair(upstream: EmulatorProcess, redis_server: RedisServer,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess,
                                                                     GatewayProcess]]:
    state = redis_state(redis_server)
    with replica_pair(tmp_path_factory.mktemp("peers"), upstream, state) as gateways:
        yield gateways


def _name(tag: str) -> str:
    return f"peers/{tag}-{os.urandom(4).hex()}"


async def _post(session: aiohttp.ClientSession, gateway: GatewayProcess, name: str) -> str:
    async with session.post(f"{gateway.url}/v2/{name}/blobs/uploads/") as r:
        assert r.status == 202, await r.text()
        return r.headers["Location"]


async def _patch(session: aiohttp.ClientSession, gateway: GatewayProcess, location: str,
                 data: bytes) -> str:
    async with session.patch(gateway.url + location, data=data, headers=OCTET) as r:
        assert r.status == 202, await r.text()
        return r.headers["Location"]


async def _put(session: aiohttp.ClientSession, gateway: GatewayProcess, location: str,
               digest: str, data: bytes = b"") -> None:
    sep = "&" if "?" in location else "?"
    async with session.put(f"{gateway.url}{location}{sep}digest={digest}", data=data,
                           headers=OCTET) as r:
        assert r.status == 201, await r.text()


async def _read(session: aiohttp.ClientSession, gateway: GatewayProcess, name: str,
                digest: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with session.get(f"{gateway.url}/v2/{name}/blobs/{digest}",
                           headers=headers or {}) as r:
        return r.status, await r.read()


async def test_blob_uploaded_through_one_replica_reads_back_through_the_other(
        pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = pair
    name = _name("one")
    blob = os.urandom(7 * MiB + 5)
    digest = digest_of(blob)
    async with aiohttp.ClientSession() as session:
        location = await _post(session, a, name)
        location = await _patch(session, a, location, blob)
        await _put(session, a, location, digest)
        async with session.head(f"{b.url}/v2/{name}/blobs/{digest}") as r:
            assert r.status == 200 and r.headers["Content-Length"] == str(len(blob))
        assert await _read(session, b, name, digest) == (200, blob)
        status, part = await _read(session, b, name, digest, {"Range": "bytes=100-1099"})
        assert (status, part) == (206, blob[100:1100])
        # Another repository does not hold the layer: not served from a peer either.
        assert (await _read(session, b, _name("other"), digest))[0] == 404


async def test_patch_on_one_replica_put_on_the_other_reads_back_everywhere(
        pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    """docker's shape: all bytes in one PATCH, then an empty PUT, on different replicas."""
    a, b = pair
    name = _name("split")
    blob = os.urandom(3 * MiB + 11)
    digest = digest_of(blob)
    async with aiohttp.ClientSession() as session:
        location = await _post(session, a, name)
        location = await _patch(session, a, location, blob)
        await _put(session, b, location, digest)
        assert await _read(session, b, name, digest) == (200, blob)
        assert await _read(session, a, name, digest) == (200, blob)


async def test_the_internal_endpoint_refuses_strangers(
        pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, _ = pair
    name = _name("stranger")
    blob = os.urandom(1000)
    digest = digest_of(blob)
    async with aiohttp.ClientSession() as session:
        location = await _post(session, a, name)
        await _put(session, a, location, digest, blob)
        for proof in (None, "0" * 64):
            headers = {"X-Peer-Proof": proof} if proof else {}
            async with session.get(f"{a.url}/_peer/staged/{digest}", headers=headers) as r:
                assert r.status == 403
                assert (await r.json())["errors"][0]["code"] == "DENIED"
