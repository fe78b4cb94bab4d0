"""Peer proofs against a real redis-server: a proof one replica makes checks in another,
and a stranger's proof that is stale, or dated far ahead, is refused before Redis is asked
for the key (an unauthenticated ``/_peer/*`` request costs Redis nothing); without Redis,
no proof: a 503."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.ecr.adopt import _SETTLING, settle_spool
from gateway.oci.errors import OciError
from gateway.state.connect import RedisConnection
from gateway.state.peers import StagedPeers
from tests.support.redis import RedisServer, redis_cli

SUBJECT = "sha256:" + "ab" * 32


def _gets(server: RedisServer) -> int:
    for line in redis_cli(server.port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_get:"):
            return int(line.split("calls=", 1)[1].split(",", 1)[0])
    return 0


async def test_stale_proofs_never_reach_redis(redis_server: RedisServer) -> None:
    one, other = (StagedPeers(RedisConnection(redis_server.url), "proofs:", 60)
                  for _ in range(2))
    try:
        proof = await one.proof(SUBJECT)
        assert await other.check(SUBJECT, proof)
        assert not await other.check("sha256:" + "cd" * 32, proof)
        mac = proof.split(".", 1)[1]
        asked = _gets(redis_server)
        for stranger in (f"{int(time.time()) - 5}.{mac}", f"{int(time.time()) + 86400}.{mac}",
                         "1.x", "999999999999.x"):
            assert not await other.check(SUBJECT, stranger)
        assert _gets(redis_server) == asked
    finally:
        await one.close()
        await other.close()


async def test_a_proof_without_redis_is_a_503_and_settling_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Redis gone between the holder's lookup and the proof: a 503 for the request that
    needed it (it was a 500 with a traceback), and the background keeping of a spool logs
    one line instead of leaving an exception no one retrieves."""
    server = RedisServer(tmp_path / "redis").start()
    peers = StagedPeers(RedisConnection(server.url, timeout=0.5), "gone:", 60)
    try:
        await peers.proof(SUBJECT)  # the key made while Redis is up
        server.stop()
        with pytest.raises(OciError) as refused:
            await peers.proof(SUBJECT)
        assert refused.value.error.status == 503
        assert refused.value.headers and refused.value.headers.get("Retry-After")
        caplog.set_level(logging.INFO, "gateway.ecr.adopt")
        async with aiohttp.ClientSession() as http:
            settle_spool(peers, http, "http://127.0.0.1:9", SUBJECT, "upload")
            await asyncio.gather(*_SETTLING)  # raises if settling did
        assert "not asked to keep the spool of upload" in caplog.text
    finally:
        await peers.close()
        server.stop()
