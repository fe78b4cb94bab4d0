"""An upload whose layer is complete stays finished, even when the process that completed it
could not close its session (it died, or the shared store failed, between keeping the staged
copy and deleting the session): the session record lives on in Redis, and the upload's spool
is the very file served as the blob until the spool is dropped."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.state.conftest import redis_state, replica
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, digest_of
from tests.support.redis import RedisServer, redis_cli


@pytest.fixture
def gateway(upstream: EmulatorProcess, redis_server: RedisServer,
            tmp_path: Path) -> Iterator[GatewayProcess]:
    # A lock the failed request could not release frees itself soon, as a dead one's does.
    state = redis_state(redis_server, lock_ttl_seconds=1)
    with replica(tmp_path / "gw", upstream, state) as gateway:
        yield gateway


@pytest.fixture
async def client(gateway: GatewayProcess) -> AsyncIterator[OciClient]:
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield OciClient(session, gateway.url)


def _staged(gateway: GatewayProcess, digest: str) -> Path:
    return Path(gateway.data_dir, "staging", "blobs", "sha256", digest.split(":")[1])


def _spool(gateway: GatewayProcess, location: str) -> Path:
    session_id = location.split("?", 1)[0].rstrip("/").rsplit("/", 1)[1]
    return Path(gateway.data_dir, "staging", "spool", session_id)


async def _put_while_redis_refuses_del(redis_server: RedisServer, client: OciClient,
                                       location: str, digest: str) -> None:
    """The closing PUT with DEL refused: the layer is completed and staged, the session is
    not deleted (nor its lock released), as when the process dies right there."""
    redis_cli(redis_server.port, "ACL", "SETUSER", "default", "-del")
    try:
        r = await client.put(location, digest)
        assert r.status >= 500, r.body
    finally:
        redis_cli(redis_server.port, "ACL", "SETUSER", "default", "+del")


async def test_an_upload_left_open_after_its_layer_was_completed_takes_no_more_bytes(
        redis_server: RedisServer, gateway: GatewayProcess, client: OciClient,
        repo: str) -> None:
    data = os.urandom(1000)
    digest = digest_of(data)
    location = await client.start(repo)
    r = await client.patch(location, data, 0)
    assert r.status == 202, r.body
    await _put_while_redis_refuses_del(redis_server, client, location, digest)
    await asyncio.sleep(1.5)  # the session's lock expires
    assert _staged(gateway, digest).read_bytes() == data

    r = await client.patch(location, b"more bytes for a finished upload", len(data))
    assert r.status == 404 and r.error_code() == "BLOB_UPLOAD_UNKNOWN", r.body
    assert _staged(gateway, digest).read_bytes() == data
    assert await client.get_blob(repo, digest) == data
    async with client.session.get(client.url(location)) as status:
        assert status.status == 404

    # The client's PUT again closes the upload as the one it finished.
    r = await client.put(location, digest)
    assert r.status == 201, r.body
    assert not _spool(gateway, location).exists()
    assert await client.get_blob(repo, digest) == data


async def test_a_finished_upload_left_open_is_dropped_soon_after_its_layer_was_completed(
        upstream: EmulatorProcess, redis_server: RedisServer, tmp_path: Path,
        repo: str) -> None:
    """Such a leftover is kept only for the client's PUT again: after
    ``uploads.finished_timeout_seconds`` its record and spool are gone, as an idle upload's
    are after ``idle_timeout_seconds`` (an hour here). The blob stays readable."""
    state = redis_state(redis_server, lock_ttl_seconds=1)
    with replica(tmp_path / "gw", upstream, state,
                 uploads={"idle_timeout_seconds": 3600, "finished_timeout_seconds": 1}
                 ) as gateway:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)) as session:
            client = OciClient(session, gateway.url)
            data = os.urandom(1000)
            digest = digest_of(data)
            location = await client.start(repo)
            r = await client.patch(location, data, 0)
            assert r.status == 202, r.body
            session_id = _spool(gateway, location).name
            record = f"{state['key_prefix']}session:{{{session_id}}}"
            await _put_while_redis_refuses_del(redis_server, client, location, digest)
            assert redis_cli(redis_server.port, "EXISTS", record) == "1"
            assert _spool(gateway, location).exists()

            # The sweep runs every second here; the session's lock frees itself after one.
            for _ in range(100):
                if redis_cli(redis_server.port, "EXISTS", record) == "0":
                    break
                await asyncio.sleep(0.1)
            assert redis_cli(redis_server.port, "EXISTS", record) == "0", \
                "the finished session is still stored"
            assert not _spool(gateway, location).exists()
            assert redis_cli(redis_server.port, "ZSCORE", f"{state['key_prefix']}sessions",
                             session_id) == ""
            r = await client.put(location, digest)
            assert r.status == 404 and r.error_code() == "BLOB_UPLOAD_UNKNOWN", r.body
            assert await client.get_blob(repo, digest) == data
