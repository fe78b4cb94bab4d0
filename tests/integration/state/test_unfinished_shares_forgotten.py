"""What other replicas hold for a client is kept only while they hold it: a client that
held bytes elsewhere when it asked here once is not remembered for ever (one entry per
client key, the callers' to choose, as many as the addresses that ever asked)."""

from __future__ import annotations

import uuid

from gateway.ecr.unfinished import UnfinishedBytes
from gateway.state.connect import RedisConnection
from gateway.state.unfinished_shares import UnfinishedShares
from tests.support.redis import RedisServer


async def _never_asked(upload_id: str) -> bool:
    raise AssertionError(f"no open upload to confirm: {upload_id}")


async def test_others_shares_gone_are_forgotten(redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    here, there = UnfinishedBytes(1000, 60.0), UnfinishedBytes(1000, 60.0)
    a = UnfinishedShares(RedisConnection(redis_server.url), prefix, here, _never_asked,
                         every=0.0)
    b = UnfinishedShares(RedisConnection(redis_server.url), prefix, there, _never_asked,
                         every=0.0)
    clients = [f"addr:192.0.2.{i}" for i in range(20)]
    try:
        for client in clients:
            there.reserve(client, 50)
        await b.flush()
        for client in clients:  # each asks here once (a POST), and never again
            await a.refresh(client)
        assert here.elsewhere == dict.fromkeys(clients, 50)
        for client in clients:  # their uploads ended there
            there.unreserve(client, 50)
        await b.flush()
        await a.flush()  # renewed: the others' sums read again
        assert here.elsewhere == {}
    finally:
        await a.close()
        await b.close()
