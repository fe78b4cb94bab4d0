"""Peer proofs against a real redis-server: a proof one replica makes checks in another,
and a stranger's proof that is stale, or dated far ahead, is refused before Redis is asked
for the key (an unauthenticated ``/_peer/*`` request costs Redis nothing)."""

from __future__ import annotations

import time

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
