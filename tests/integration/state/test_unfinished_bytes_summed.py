"""A client's unfinished-upload bytes with replicas sharing Redis: each replica counted them
in its own memory (``limits.max_abandoned_upload_bytes_per_client``), so a client whose
requests a load balancer spread over two replicas had ECR hold twice the bound: ECR has no
call that cancels an upload, and the parts of cancelled ones stay on the emulator's disk.
The replicas now add up their counts in Redis (gateway/state/unfinished_shares.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.integration.state.conftest import redis_state, replica_pair
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, Reply, digest_of
from tests.support.polling import until
from tests.support.redis import RedisServer, SharedRedis, redis_cli

MiB = 1024 * 1024
PART = 5 * MiB  # the emulator's part size, as set below
BOUND = 4 * PART


def part_sized_emulator(folder: Path) -> EmulatorProcess:
    return EmulatorProcess(folder, env={"ECR_EMULATOR_PART_SIZE": str(PART)})


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorProcess]:
    with part_sized_emulator(tmp_path / "ecr") as ecr:
        yield ecr


Replicas = tuple[GatewayProcess, GatewayProcess, str]


@contextmanager
def bounded_replicas(root: Path, emulator: EmulatorProcess,
                     server: SharedRedis) -> Iterator[Replicas]:
    """Two replicas sharing ``server`` with a bound of ``BOUND``, and their keys' prefix."""
    state = redis_state(server)
    limits = {"max_abandoned_upload_bytes_per_client": BOUND}
    with replica_pair(root, emulator, state, limits=limits) as (a, b):
        yield a, b, state["key_prefix"]


@pytest.fixture
def replicas(tmp_path: Path, redis_server: RedisServer,
             emulator: EmulatorProcess) -> Iterator[Replicas]:
    with bounded_replicas(tmp_path, emulator, redis_server) as replicas:
        yield replicas


def _held_by_ecr(emulator: EmulatorProcess) -> int:
    folder = emulator.data_dir / "uploads"
    return sum(path.stat().st_size for path in folder.iterdir()) if folder.is_dir() else 0


def _shared(server: SharedRedis, prefix: str) -> int:
    """The replicas' shares of every client's bytes, as Redis holds them (on every node of a
    Cluster)."""
    total = 0
    for node in getattr(server, "nodes", [server]):
        pattern = f"{prefix}unfinished:*"
        for key in redis_cli(node.port, "--scan", "--pattern", pattern).split():
            values = redis_cli(node.port, "hvals", key).split("\n")
            total += sum(int(value.split()[0]) for value in values if value)
    return total


async def _written(server: SharedRedis, prefix: str, size: int) -> None:
    """Until the replicas' counts in Redis add up to ``size`` (what follows says whether
    they are used)."""
    await until(lambda: _shared(server, prefix) == size, 15)


def _refused(reply: Reply) -> None:
    assert reply.status == 429, (reply.status, reply.body[:300])
    assert reply.error_code() == "TOOMANYREQUESTS"


async def _streamed(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), MiB):
        yield data[start:start + MiB]


async def test_uploads_cancelled_through_each_replica_count_once_for_all(
        replicas: Replicas, repo: str, redis_server: SharedRedis,
        emulator: EmulatorProcess) -> None:
    a, b, prefix = replicas
    async with aiohttp.ClientSession() as session:
        for gateway in (a, b):  # half the bound through each
            client = OciClient(session, gateway.url)
            reply = await client.patch(await client.start(repo), os.urandom(2 * PART), 0)
            assert reply.status == 202, reply.body
            async with session.delete(client.url(reply.headers["Location"])) as cancel:
                assert cancel.status == 204, await cancel.text()
        await _written(redis_server, prefix, BOUND)
        for gateway in (a, b):  # each replica now refuses what both hold
            async with session.post(f"{gateway.url}/v2/{repo}/blobs/uploads/") as more:
                assert more.status == 429, (gateway.url, await more.text())
                assert int(more.headers["Retry-After"]) >= 1
    assert _held_by_ecr(emulator) <= BOUND


async def test_open_uploads_on_one_replica_bound_what_another_lets_send(
        replicas: Replicas, repo: str, redis_server: SharedRedis,
        emulator: EmulatorProcess) -> None:
    a, b, prefix = replicas
    async with aiohttp.ClientSession() as session:
        on_a, on_b = OciClient(session, a.url), OciClient(session, b.url)
        held = await on_a.patch(await on_a.start(repo), os.urandom(3 * PART), 0)
        assert held.status == 202, held.body
        await _written(redis_server, prefix, 3 * PART)

        # Room for one part is left: a body of known length that needs two is refused
        # before a byte is read...
        location = await on_b.start(repo)
        _refused(await on_b.patch(location, os.urandom(2 * PART), 0))
        # ...and a streamed one stops after the part that fits, keeping its Range.
        async with session.patch(on_b.url(location), data=_streamed(os.urandom(3 * PART)),
                                 headers={"Content-Type": "application/octet-stream"}
                                 ) as stopped:
            assert stopped.status == 429, await stopped.text()
            assert stopped.headers["Range"] == f"0-{PART - 1}"
        assert _held_by_ecr(emulator) == BOUND
    for gateway in (a, b):
        assert "Traceback" not in "\n".join(gateway.log_lines)


async def test_an_upload_completed_through_another_replica_leaves_no_count_behind(
        replicas: Replicas, repo: str, redis_server: SharedRedis) -> None:
    """The replica that sent the parts counted them; the one that completed the upload had
    nothing to give back. The sender's share would have every replica refuse the client for
    bytes ECR no longer holds as an upload, until its sweep an idle timeout later."""
    a, b, prefix = replicas
    async with aiohttp.ClientSession() as session:
        on_a, on_b = OciClient(session, a.url), OciClient(session, b.url)
        layer = os.urandom(3 * PART)
        sent = await on_b.patch(await on_b.start(repo), layer, 0)
        assert sent.status == 202, sent.body
        await _written(redis_server, prefix, 3 * PART)
        done = await on_a.put(sent.headers["Location"], digest_of(layer))
        assert done.status == 201, done.body
        await _written(redis_server, prefix, 0)

        more = await on_a.patch(await on_a.start(repo), os.urandom(2 * PART), 0)
        assert more.status == 202, more.body
