"""Two gateway replicas sharing one Redis: any replica continues any upload session.

Each test runs two real gateway processes on different ports, the same emulator upstream
and the same redis-server. Blobs uploaded across replicas are read back after a manifest
references them (an upload spread over replicas is staged nowhere; see
test_staged_peers.py for blobs read back before that)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.state.conftest import redis_state, replica, replica_pair
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer

MiB = 1024 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCTET = {"Content-Type": "application/octet-stream"}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def replicas(upstream: EmulatorProcess, redis_server: RedisServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess,
                                                                         GatewayProcess]]:
    state = redis_state(redis_server, lock_ttl_seconds=2)
    with replica_pair(tmp_path_factory.mktemp("replicas"), upstream, state) as gateways:
        yield gateways


async def start(session: aiohttp.ClientSession, gateway: GatewayProcess, name: str) -> str:
    async with session.post(f"{gateway.url}/v2/{name}/blobs/uploads/") as r:
        assert r.status == 202, await r.text()
        return r.headers["Location"]


async def patch(session: aiohttp.ClientSession, gateway: GatewayProcess, location: str,
                data: bytes, offset: int) -> str:
    headers = {**OCTET, "Content-Range": f"{offset}-{offset + len(data) - 1}"}
    async with session.patch(gateway.url + location, data=data, headers=headers) as r:
        assert r.status == 202, (gateway.url, r.status, await r.text())
        assert r.headers["Range"] == f"0-{offset + len(data) - 1}"
        return r.headers["Location"]


async def offset_of(session: aiohttp.ClientSession, gateway: GatewayProcess,
                    location: str) -> int:
    async with session.get(gateway.url + location) as r:
        assert r.status == 204, await r.text()
        last = int(r.headers["Range"].split("-")[1])
        return last + 1


async def finish(session: aiohttp.ClientSession, gateway: GatewayProcess, location: str,
                 digest: str, data: bytes = b"") -> None:
    sep = "&" if "?" in location else "?"
    async with session.put(f"{gateway.url}{location}{sep}digest={digest}", data=data,
                           headers=OCTET) as r:
        assert r.status == 201, (gateway.url, r.status, await r.text())


async def push_manifest(session: aiohttp.ClientSession, gateway: GatewayProcess, name: str,
                        layer: bytes) -> None:
    """Reference the layer from an image (ECR serves referenced layers only)."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    location = await start(session, gateway, name)
    await finish(session, gateway, location, digest_of(config), config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest_of(layer), "size": len(layer)}]}).encode()
    async with session.put(f"{gateway.url}/v2/{name}/manifests/v1", data=manifest,
                           headers={"Content-Type": OCI_MANIFEST}) as r:
        assert r.status == 201, await r.text()


async def read_blob(session: aiohttp.ClientSession, gateway: GatewayProcess, name: str,
                    digest: str) -> bytes:
    async with session.get(f"{gateway.url}/v2/{name}/blobs/{digest}") as r:  # follows 307
        assert r.status == 200, await r.text()
        return await r.read()


def _name(tag: str) -> str:
    return f"replicas/{tag}-{os.urandom(4).hex()}"


async def test_patch_on_one_replica_and_put_on_the_other(
        replicas: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = replicas
    name = _name("split")
    head, rest = os.urandom(3 * MiB + 17), os.urandom(4 * MiB + 5)
    layer = head + rest
    async with aiohttp.ClientSession() as session:
        location = await start(session, a, name)
        location = await patch(session, a, location, head, 0)  # tail of 3 MiB waits in Redis
        assert await offset_of(session, b, location) == len(head)
        await finish(session, b, location, digest_of(layer), rest)
        await push_manifest(session, b, name, layer)
        assert await read_blob(session, a, name, digest_of(layer)) == layer


async def test_chunked_upload_alternating_between_replicas(
        replicas: tuple[GatewayProcess, GatewayProcess], upstream: EmulatorProcess) -> None:
    """Nine chunks of uneven sizes, each on the other replica than the one before: ECR
    receives consecutive parts and the blob reads back byte for byte."""
    name = _name("alternate")
    layer = os.urandom(25 * MiB + 321)
    cuts = [0, 3 * MiB, 4 * MiB + 7, 9 * MiB, 12 * MiB + 1, 13 * MiB, 17 * MiB + 99,
            21 * MiB, 24 * MiB, len(layer)]
    async with aiohttp.ClientSession() as session:
        location = await start(session, a := replicas[0], name)
        for index, (begin, end) in enumerate(itertools.pairwise(cuts)):
            here, other = replicas[index % 2], replicas[(index + 1) % 2]
            location = await patch(session, here, location, layer[begin:end], begin)
            assert await offset_of(session, other, location) == end
        await finish(session, replicas[len(cuts) % 2], location, digest_of(layer))
        await push_manifest(session, a, name, layer)
        assert await read_blob(session, replicas[1], name, digest_of(layer)) == layer
    served = {entry["path"] for gw in replicas for entry in gw.access_log()
              if entry["method"] == "PATCH" and entry["repository"] == name}
    assert len(served) == 1  # one session: the same upload id on both replicas
    parts = [r for r in upstream.requests("UploadLayerPart") if r["repository"] == name]
    assert len(parts) >= 3 and all(r["outcome"] == "ok" for r in parts)


async def test_kill9_between_requests_then_finish_on_the_other(
        upstream: EmulatorProcess, redis_server: RedisServer, tmp_path: Path) -> None:
    state = redis_state(redis_server, lock_ttl_seconds=2)
    name = _name("kill-between")
    layer = os.urandom(14 * MiB + 3)
    with replica(tmp_path / "a", upstream, state) as a, \
            replica(tmp_path / "b", upstream, state) as b:
        async with aiohttp.ClientSession() as session:
            location = await start(session, a, name)
            location = await patch(session, a, location, layer[:6 * MiB], 0)
            location = await patch(session, a, location, layer[6 * MiB:8 * MiB + 1], 6 * MiB)
            a.kill9()  # the replica that held every request so far
            offset = await offset_of(session, b, location)
            assert offset == 8 * MiB + 1
            location = await patch(session, b, location, layer[offset:], offset)
            await finish(session, b, location, digest_of(layer))
            await push_manifest(session, b, name, layer)
            assert await read_blob(session, b, name, digest_of(layer)) == layer


async def test_kill9_mid_request_then_resume_on_the_other(
        upstream: EmulatorProcess, redis_server: RedisServer, tmp_path: Path) -> None:
    """The replica dies while a PATCH streams, after ECR acknowledged a part. Each
    acknowledged part is recorded before the next is sent, so the other replica (once the
    dead one's lock expired) reports the offset ECR holds, and the upload resumes there: no
    byte is lost, doubled or sent twice."""
    import redis as sync_redis

    state = redis_state(redis_server, lock_ttl_seconds=2)
    name = _name("kill-mid")
    layer = os.urandom(24 * MiB + 11)
    with replica(tmp_path / "a", upstream, state) as a, \
            replica(tmp_path / "b", upstream, state) as b:
        async with aiohttp.ClientSession() as session:
            location = await start(session, a, name)
            location = await patch(session, a, location, layer[:3 * MiB], 0)
            record_key = f"{state['key_prefix']}session:{{{location.rsplit('/', 1)[-1]}}}"
            sent_enough = asyncio.Event()

            async def slow_body() -> AsyncIterator[bytes]:
                for at in range(3 * MiB, len(layer), MiB):
                    if at >= 14 * MiB:
                        sent_enough.set()
                        await asyncio.sleep(60)
                    yield layer[at:at + MiB]

            async def doomed() -> None:
                async with session.patch(a.url + location, data=slow_body(), headers={
                        **OCTET, "Content-Range": f"{3 * MiB}-{len(layer) - 1}"}) as r:
                    await r.read()

            upstream.clear_requests()
            request = asyncio.create_task(doomed())
            await asyncio.wait_for(sent_enough.wait(), 30)
            deadline = time.monotonic() + 20
            while not [r for r in upstream.requests("UploadLayerPart")
                       if r["repository"] == name and r["outcome"] == "ok"]:
                assert time.monotonic() < deadline, "no part reached ECR"
                await asyncio.sleep(0.05)
            client = sync_redis.Redis.from_url(redis_server.url)
            part = 10 * MiB  # the emulator's partSize
            # ECR answered; the replica records the part within moments of the answer.
            while client.hget(record_key, "committed") != str(part).encode():
                assert time.monotonic() < deadline, client.hgetall(record_key).keys()
                await asyncio.sleep(0.01)
            client.close()
            a.kill9()
            with pytest.raises(aiohttp.ClientError):
                await request
            offset = await offset_of(session, b, location)
            assert offset == part  # not 3 MiB: the acknowledged part was recorded
            started = time.monotonic()
            location = await patch(session, b, location, layer[offset:], offset)
            assert time.monotonic() - started < 15  # waited for the lock at most its TTL
            await finish(session, b, location, digest_of(layer))
            await push_manifest(session, b, name, layer)
            assert await read_blob(session, b, name, digest_of(layer)) == layer
    outcomes = [r["outcome"] for r in upstream.requests("UploadLayerPart")
                if r["repository"] == name]
    # No part was sent twice: B went on from where ECR stood.
    assert outcomes and all(o == "ok" for o in outcomes), outcomes


async def test_idle_sessions_expire_on_every_replica(
        upstream: EmulatorProcess, redis_server: RedisServer, tmp_path: Path) -> None:
    """A session nobody touches for uploads.idle_timeout_seconds is dropped once, by one
    replica's sweeper, for all of them; its keys leave Redis."""
    import redis as sync_redis

    state = redis_state(redis_server)
    name = _name("idle")
    settings = {"uploads": {"idle_timeout_seconds": 2}}
    with replica(tmp_path / "a", upstream, state, **settings) as a, \
            replica(tmp_path / "b", upstream, state, **settings) as b:
        async with aiohttp.ClientSession() as session:
            location = await start(session, a, name)
            await patch(session, a, location, os.urandom(1000), 0)
            client = sync_redis.Redis.from_url(redis_server.url)
            assert client.zcard(f"{state['key_prefix']}sessions") == 1
            deadline = time.monotonic() + 15
            while client.zcard(f"{state['key_prefix']}sessions"):
                assert time.monotonic() < deadline, "the idle session was not dropped"
                await asyncio.sleep(0.2)
            # only the live replicas' settings stay (gateway/state/agreement.py)
            assert client.keys(f"{state['key_prefix']}*") == [
                f"{state['key_prefix']}replicas".encode()]
            client.close()
            for gateway in (a, b):
                async with session.get(gateway.url + location) as r:
                    assert r.status == 404
                    assert (await r.json())["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"


async def test_redis_down_answers_503_without_its_details(upstream: EmulatorProcess,
                                                          tmp_path: Path) -> None:
    """Redis down: 503 with Retry-After, not a 500. The client learns that the session store
    is unavailable, not where Redis is nor which keys and commands failed (that is the
    log's, as for /readyz)."""
    redis = RedisServer(tmp_path / "redis").start()
    name = _name("down")
    try:
        with replica(tmp_path / "a", upstream, redis_state(redis)) as a:
            async with aiohttp.ClientSession() as session:
                location = await start(session, a, name)
                redis.stop()
                for method, url in (("PATCH", a.url + location),
                                    ("POST", f"{a.url}/v2/{name}/blobs/uploads/")):
                    async with session.request(method, url, data=b"x" * 100,
                                               headers=OCTET) as r:
                        assert r.status == 503 and r.headers["Retry-After"] == "1"
                        error = (await r.json())["errors"][0]
                    assert error["code"] == "UNAVAILABLE"
                    assert "session store unavailable" in error["message"]
                    for detail in (str(redis.port), "127.0.0.1", "Error", "connect"):
                        assert detail not in json.dumps(error), (detail, error)
                assert await a.logged(str(redis.port))  # the operator still sees what failed
    finally:
        redis.stop()


async def test_redis_lost_mid_patch_then_back_ends_the_upload_cleanly(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """Redis stops in the middle of a PATCH body: that PATCH gets 503 with Retry-After, the
    replica says in one warning that it takes Redis as down, and its session sweep skips
    its rounds meanwhile, no traceback on any tick; once Redis is back (empty: it keeps
    nothing on disk) and the replicas found it again (a second or so: 503 until then), the
    upload is unknown on every replica and a new one succeeds."""
    redis = RedisServer(tmp_path / "redis")
    name = _name("lost")
    layer = os.urandom(8 * MiB)

    async def body() -> AsyncIterator[bytes]:
        for start in range(MiB, 8 * MiB, MiB // 4):
            if start == 6 * MiB:
                redis.stop()
            yield layer[start:start + MiB // 4]
            await asyncio.sleep(0.01)

    with redis, replica_pair(tmp_path, upstream, redis_state(redis),
                             uploads={"finished_timeout_seconds": 2}) as (a, b):
        async with aiohttp.ClientSession() as session:
            location = await patch(session, a, await start(session, a, name), layer[:MiB], 0)
            async with session.patch(a.url + location, data=body(), headers=OCTET) as r:
                assert r.status == 503 and r.headers["Retry-After"], await r.text()
                assert (await r.json())["errors"][0]["code"] == "UNAVAILABLE"
            # Said in a line; the sweep's ticks meanwhile, no traceback.
            assert await a.logged("taken as down;")
            await asyncio.sleep(3)  # sweep ticks (every second here) while Redis is down
            assert "Traceback" not in "\n".join(a.log_lines)
            assert sum("expiring idle upload sessions" in line for line in a.log_lines) <= 1
            redis.start()
            for gateway in (a, b):
                deadline = time.monotonic() + 10
                while True:
                    async with session.get(gateway.url + location) as r:
                        if r.status != 503 or time.monotonic() > deadline:
                            assert r.status == 404, await r.text()
                            break
                    await asyncio.sleep(0.1)
                async with session.get(gateway.url + location) as r:
                    assert (await r.json())["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
            location = await patch(session, b, await start(session, b, name), layer, 0)
            await finish(session, a, location, digest_of(layer))
            await push_manifest(session, b, name, layer)
            assert await read_blob(session, b, name, digest_of(layer)) == layer
    assert "Traceback" not in "\n".join(a.log_lines + b.log_lines)
