"""The shared state without a single point of failure: Redis behind Sentinel, and Redis
Cluster. Real processes throughout: redis-server masters and replicas, Sentinels
(``redis-server --sentinel``), an emulator and gateway replicas.

With Sentinel, the master fails over in the middle of an upload (handed over with SENTINEL
FAILOVER, or killed): the client carries on as the OCI protocol says (on an error it asks
the upload's offset and resumes from there), the upload completes and the blob reads back
byte for byte. With Cluster, the replica tests run as they do on a single Redis."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway.state.connect import RedisConnection
from gateway.state.redis import RedisSessionStore
from tests.integration.state import (
    test_cache_coherence,
    test_login_limits_replicas,
    test_notice_acks,
    test_redis_store,
    test_replicas,
    test_staged_peers,
    test_unfinished_bytes_summed,
)
from tests.integration.state.conftest import redis_state, replica, replica_pair
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisClusterGroup, RedisSentinelGroup, RedisServer

MiB = 1024 * 1024
OCTET = {"Content-Type": "application/octet-stream"}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def _offset(session: aiohttp.ClientSession, gateway: GatewayProcess, location: str,
                  deadline: float) -> int:
    """The upload's offset, asked until the gateway can answer (503 during a failover)."""
    while True:
        async with session.get(gateway.url + location) as r:
            if r.status == 204:
                return int(r.headers["Range"].split("-")[1]) + 1
            assert r.status == 503, (r.status, await r.text())
        assert time.monotonic() < deadline, "the upload stayed unavailable"
        await asyncio.sleep(0.2)


async def _send(session: aiohttp.ClientSession, gateway: GatewayProcess, location: str,
                data: bytes, begin: int, end: int) -> int:
    """PATCH ``data[begin:end]``; on any refusal resume from the offset the gateway gives.
    Returns the offset reached (``end``)."""
    deadline = time.monotonic() + 60
    offset = begin
    while offset < end:
        headers = {**OCTET, "Content-Range": f"{offset}-{end - 1}"}
        async with session.patch(gateway.url + location, data=data[offset:end],
                                 headers=headers) as r:
            if r.status == 202:
                offset = end
                continue
            assert r.status in (409, 416, 503), (r.status, await r.text())
        offset = await _offset(session, gateway, location, deadline)
        assert offset <= end, "the gateway claims bytes it was never sent"
    return offset


@pytest.fixture(scope="module")
def sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelGroup]:
    with RedisSentinelGroup(tmp_path_factory.mktemp("sentinel")) as group:
        yield group


@pytest.mark.parametrize("kill", [False, True], ids=["sentinel-failover", "master-killed"])
async def test_upload_survives_a_sentinel_failover(
        upstream: EmulatorProcess, sentinel_group: RedisSentinelGroup, tmp_path: Path,
        kill: bool) -> None:
    state = redis_state(sentinel_group, lock_ttl_seconds=2)
    name = f"ha/failover-{os.urandom(4).hex()}"
    layer = os.urandom(23 * MiB + 77)
    cuts = [0, 6 * MiB + 1, 13 * MiB, 17 * MiB + 5, len(layer)]
    with replica(tmp_path / "a", upstream, state) as a, \
            replica(tmp_path / "b", upstream, state) as b:
        async with aiohttp.ClientSession() as session:
            location = await test_replicas.start(session, a, name)
            await _send(session, a, location, layer, cuts[0], cuts[1])
            await _send(session, b, location, layer, cuts[1], cuts[2])
            before = sentinel_group.master_port()
            await asyncio.to_thread(sentinel_group.failover, kill=kill)
            assert sentinel_group.master_port() != before
            await _send(session, a, location, layer, cuts[2], cuts[3])
            await _send(session, b, location, layer, cuts[3], cuts[4])
            await test_replicas.finish(session, a, location, digest_of(layer))
            await test_replicas.push_manifest(session, b, name, layer)
            for gateway in (a, b):
                assert await test_replicas.read_blob(session, gateway, name,
                                                     digest_of(layer)) == layer


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterGroup]:
    with RedisClusterGroup(tmp_path_factory.mktemp("cluster")) as group:
        yield group


@pytest.fixture(scope="module")
def cluster_pair(upstream: EmulatorProcess, cluster: RedisClusterGroup,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess,
                                                                             GatewayProcess]]:
    state = redis_state(cluster, lock_ttl_seconds=2)
    with replica_pair(tmp_path_factory.mktemp("cluster-replicas"), upstream, state) as gateways:
        yield gateways


async def test_cluster_upload_alternating_between_replicas(
        cluster_pair: tuple[GatewayProcess, GatewayProcess], upstream: EmulatorProcess) -> None:
    await test_replicas.test_chunked_upload_alternating_between_replicas(cluster_pair, upstream)


async def test_cluster_staged_blob_reads_back_through_the_other_replica(
        cluster_pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    await test_staged_peers.test_patch_on_one_replica_put_on_the_other_reads_back_everywhere(
        cluster_pair)


async def test_cluster_notices_are_acknowledged_before_a_write_returns(
        cluster: RedisClusterGroup) -> None:
    """Every replica listens on the node whose PUBLISH of a notice counts them all, and
    hears the others' acknowledgments there (each on a channel of its own, in another slot)."""
    for _ in range(3):  # each round, replicas of other ids (their channels' slots)
        await test_notice_acks.test_a_write_returns_once_the_other_replicas_applied_its_notice(
            cluster)


async def test_cluster_notices_keep_replica_caches_coherent(
        upstream: EmulatorProcess, cluster: RedisClusterGroup, tmp_path: Path) -> None:
    await test_cache_coherence.test_with_redis_tag_moves_and_deletes_are_seen_at_once(
        upstream, cluster, tmp_path / "moves")
    await test_cache_coherence.test_with_redis_tag_lists_follow_other_replicas_at_once(
        upstream, cluster, tmp_path / "lists")



async def test_cluster_failed_logins_meet_one_limit_over_replicas(
        upstream: EmulatorProcess, cluster: RedisClusterGroup, tmp_path: Path) -> None:
    """The scripts' keys of one name share a slot (its digest is their tag)."""
    await test_login_limits_replicas.test_a_guesser_spread_over_replicas_meets_one_limit(
        upstream, cluster, tmp_path, "aba")


async def test_cluster_unfinished_bytes_are_summed_over_replicas(
        cluster: RedisClusterGroup, tmp_path: Path, repo: str) -> None:
    summed = test_unfinished_bytes_summed
    with summed.part_sized_emulator(tmp_path / "ecr") as ecr, \
            summed.bounded_replicas(tmp_path, ecr, cluster) as replicas:
        await summed.test_open_uploads_on_one_replica_bound_what_another_lets_send(
            replicas, repo, cluster, ecr)


def _session_key(state: dict[str, str], location: str) -> str:
    return f"{state['key_prefix']}session:{{{location.rstrip('/').rsplit('/', 1)[1]}}}"


async def test_a_session_record_older_than_ecr_realigns_and_the_blob_is_intact(
        upstream: EmulatorProcess, redis_server: RedisServer, tmp_path: Path) -> None:
    """What a failover can do: the new master lacks the last write of a session (Redis
    replicates asynchronously). Here the record is put back to an older copy of itself
    while ECR already holds the parts written after it: the client's next chunk is refused
    (416, the offset it was told is ahead of the record), it resumes from the offset the
    gateway gives, the gateway skips what ECR already holds, and the blob is intact."""
    state = redis_state(redis_server)
    name = f"ha/behind-{os.urandom(4).hex()}"
    layer = os.urandom(22 * MiB + 9)
    cuts = [0, 6 * MiB + 1, 13 * MiB + 1, len(layer)]
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        with replica(tmp_path / "a", upstream, state) as a:
            async with aiohttp.ClientSession() as session:
                location = await test_replicas.start(session, a, name)
                key = _session_key(state, location)
                await _send(session, a, location, layer, cuts[0], cuts[1])
                older = await raw.dump(key)
                await _send(session, a, location, layer, cuts[1], cuts[2])
                await raw.restore(key, 0, older, replace=True)  # the last write is lost
                assert await _offset(session, a, location, time.monotonic() + 10) == cuts[1]
                await _send(session, a, location, layer, cuts[2], cuts[3])
                await test_replicas.finish(session, a, location, digest_of(layer))
                await test_replicas.push_manifest(session, a, name, layer)
                assert await test_replicas.read_blob(session, a, name,
                                                     digest_of(layer)) == layer
    finally:
        await raw.aclose()
    parts = [r for r in upstream.requests("UploadLayerPart") if r["repository"] == name]
    assert any(r["outcome"] != "ok" for r in parts)  # ECR refused the stale offset once


async def test_a_session_lost_in_a_failover_is_unknown_never_a_wrong_blob(
        upstream: EmulatorProcess, redis_server: RedisServer, tmp_path: Path) -> None:
    state = redis_state(redis_server)
    name = f"ha/vanished-{os.urandom(4).hex()}"
    layer = os.urandom(7 * MiB)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        with replica(tmp_path / "a", upstream, state) as a:
            async with aiohttp.ClientSession() as session:
                location = await test_replicas.start(session, a, name)
                await _send(session, a, location, layer, 0, 3 * MiB)
                await raw.delete(_session_key(state, location))  # never reached the replica
                headers = {**OCTET, "Content-Range": f"{3 * MiB}-{len(layer) - 1}"}
                async with session.patch(a.url + location, data=layer[3 * MiB:],
                                         headers=headers) as r:
                    assert r.status == 404
                    assert (await r.json())["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
                sep = "&" if "?" in location else "?"
                async with session.put(f"{a.url}{location}{sep}digest={digest_of(layer)}",
                                       data=layer[3 * MiB:], headers=OCTET) as r:
                    assert r.status == 404
                    assert (await r.json())["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
                # The client starts over, as the protocol has it.
                location = await test_replicas.start(session, a, name)
                await test_replicas.finish(session, a, location, digest_of(layer), layer)
                assert await test_replicas.read_blob(session, a, name,
                                                     digest_of(layer)) == layer
    finally:
        await raw.aclose()


async def test_cluster_session_store(cluster: RedisClusterGroup) -> None:
    """The store's own operations, each within one slot (a Cluster refuses any other)."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    stores = tuple(RedisSessionStore(RedisConnection(cluster.url), prefix=prefix,
                                     lock_ttl=1.0, lock_wait=5.0) for _ in range(2))
    pair = (stores[0], stores[1])
    try:
        await test_redis_store.test_record_and_tail_round_trip_between_replicas(pair)
        await test_redis_store.test_lock_excludes_the_other_replica_until_released(pair)
        await test_redis_store.test_save_checks_the_offsets_the_request_started_from(pair)
        await test_redis_store.test_a_write_sent_again_after_a_lost_answer_is_not_refused(pair)
        ids = []
        for _ in range(5):  # spread over the nodes' slots
            ids.append(test_redis_store._session(updated_at=1.0))
            await pair[0].create(ids[-1])
        assert {s.id for s in await pair[1].idle(2.0)} == {s.id for s in ids}
        assert await pair[1].count() >= 5
    finally:
        for store in stores:
            await store.close()
