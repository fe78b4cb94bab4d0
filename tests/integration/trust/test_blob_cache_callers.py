"""Proxy mode's blob cache holds every repository's blobs by digest, behind one gateway that
reads ECR for all callers. Attacker tests: a caller who may pull one repository learns
nothing of the copies the cache holds for others (status, metrics, read order,
verification), and a caller who stops reading a blob it may pull does not hold everybody
else's reads of that blob (a fill waited for goes at the pace of its client)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.auth.conftest import htpasswd_auth
from tests.integration.auth.helpers import basic, write_htpasswd
from tests.integration.mirror.helpers import push_image, sha256
from tests.integration.state.conftest import redis_server, redis_state, replica
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient
from tests.support.redis import RedisServer

__all__ = ["redis_server"]  # the fixture, for the replicas' test

# alice and ci-a: team-a/**; bob: public/* only (tests/integration/auth/conftest.py).
USERS = {"alice": "alice-pw", "bob": "bob-pw"}
ALICE, BOB = basic("alice", "alice-pw"), basic("bob", "bob-pw")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("blob-cache")


@pytest.fixture(scope="module")
def proxy(upstream: EmulatorProcess, cache_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    users = write_htpasswd(tmp_path_factory.mktemp("users") / "htpasswd", USERS)
    config = {"auth": htpasswd_auth(users),
              "blobs": {"mode": "proxy", "cache": {"path": str(cache_dir)}}}
    with GatewayProcess(tmp_path_factory.mktemp("gw"), config,
                        upstream_url=upstream.url) as gw:
        yield gw


async def _blob_events(session: aiohttp.ClientSession, gw: GatewayProcess) -> dict[str, float]:
    async with session.get(f"{gw.url}/metrics", headers=BOB) as r:  # any login reads them
        assert r.status == 200
        text = await r.text()
    return {m[1]: float(m[2]) for m in re.finditer(
        r'^ecr_gateway_cache_events_total\{cache="blob",event="(\w+)"\} (\S+)$', text, re.M)}


async def _probe(session: aiohttp.ClientSession, gw: GatewayProcess, name: str,
                 digest: str) -> tuple[int, dict[str, float]]:
    """Bob's GET of ``digest`` in a repository of his: its status and the blob cache events
    it made."""
    before = await _blob_events(session, gw)
    async with session.get(f"{gw.url}/v2/{name}/blobs/{digest}", headers=BOB) as r:
        status = r.status
        await r.read()
    after = await _blob_events(session, gw)
    return status, {k: v - before.get(k, 0.0) for k, v in after.items()
                    if v != before.get(k, 0.0)}


async def test_a_refused_read_learns_nothing_of_another_repositorys_cached_blob(
        gateway: GatewayProcess, proxy: GatewayProcess, cache_dir: Path) -> None:
    secret = await push_image(gateway.url, f"team-a/secret-{uuid.uuid4().hex[:8]}",
                              layer_sizes=(300_000,))
    own = await push_image(gateway.url, f"public/bob-{uuid.uuid4().hex[:8]}",
                           layer_sizes=(1000,))
    layer = sha256(secret.layers[0])
    never = sha256(os.urandom(64))
    cached = cache_dir / "sha256" / layer.split(":", 1)[1]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{proxy.url}/v2/{secret.name}/blobs/{layer}",
                               headers=ALICE) as r:
            assert r.status == 200 and await r.read() == secret.layers[0]
        assert cached.exists()
        # Cached for team-a, absent from bob's repository (as ECR has it): the same answer,
        # and the same metrics, as for a digest nobody holds.
        refused = await _probe(session, proxy, own.name, layer)
        unknown = await _probe(session, proxy, own.name, never)
        assert refused == unknown == (404, {"miss": 1.0}), (refused, unknown)

    # After a restart the first read of a cached file hashes it and moves it to the end of
    # the read order (its mtime): a read that may not have it must not do either.
    proxy.restart()
    old = time.time() - 3600
    os.utime(cached, (old, old))
    async with aiohttp.ClientSession() as session:
        refused = await _probe(session, proxy, own.name, layer)
        assert refused == (404, {"miss": 1.0}), refused
        assert cached.stat().st_mtime == old
        async with session.get(f"{proxy.url}/v2/{secret.name}/blobs/{layer}",
                               headers=ALICE) as r:  # the owner still reads it from the cache
            assert r.status == 200 and await r.read() == secret.layers[0]
        assert cached.stat().st_mtime > old


async def test_a_reader_that_stops_does_not_hold_other_repositories_reads(
        gateway: GatewayProcess, proxy: GatewayProcess) -> None:
    """Bob holds a well-known layer in his own repository and never reads its body; alice
    reads the same layer from team-a's image meanwhile (she waited as long as bob kept his
    connection open)."""
    victim = await push_image(gateway.url, f"team-a/app-{uuid.uuid4().hex[:8]}",
                              layer_sizes=(48_000_000,))
    layer = sha256(victim.layers[0])
    own = f"public/bob-{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as session:
        await OciClient(session, gateway.url).push_image(own, "v1", victim.layers)
    with _stalled_read(proxy, f"/v2/{own}/blobs/{layer}", BOB["Authorization"]):
        started = time.monotonic()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.get(f"{proxy.url}/v2/{victim.name}/blobs/{layer}",
                                   headers=ALICE) as r:
                assert r.status == 200
                assert await r.read() == victim.layers[0]
        assert time.monotonic() - started < 20


@contextlib.contextmanager
def _stalled_read(gw: GatewayProcess, path: str, authorization: str | None = None
                  ) -> Iterator[None]:
    """A GET of ``path`` whose answer is never read (a receive buffer of 4 KiB): the
    gateway's fill of the blob stops where the buffers are full."""
    staller = socket.socket()
    staller.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    staller.connect(("127.0.0.1", gw.port))
    try:
        auth = f"Authorization: {authorization}\r\n" if authorization else ""
        staller.sendall(f"GET {path} HTTP/1.1\r\nHost: gw\r\n{auth}\r\n".encode())
        time.sleep(2)  # the fill started, and stopped
        yield
    finally:
        staller.close()


async def test_a_reader_that_stops_does_not_hold_the_other_replicas(
        upstream: EmulatorProcess, gateway: GatewayProcess, redis_server: RedisServer,
        tmp_path: Path) -> None:
    """With replicas, the one fetching a cold blob holds a lock the others wait for (up to
    an hour): a client that stops reading on one must not hold the reads on the others."""
    image = await push_image(gateway.url, f"stall/{uuid.uuid4().hex[:10]}",
                             layer_sizes=(48_000_000,))
    layer = sha256(image.layers[0])
    state = redis_state(redis_server)
    with contextlib.ExitStack() as stack:
        first, other = (stack.enter_context(replica(
            tmp_path / label, upstream, state,
            blobs={"mode": "proxy", "cache": {"path": str(tmp_path / label / "cache")}}))
            for label in "ab")
        with _stalled_read(first, f"/v2/{image.name}/blobs/{layer}"):
            started = time.monotonic()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=40)) as s:
                async with s.get(f"{other.url}/v2/{image.name}/blobs/{layer}") as r:
                    assert r.status == 200
                    assert await r.read() == image.layers[0]
            assert time.monotonic() - started < 30
