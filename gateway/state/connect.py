"""How every part of the Redis state backend connects: one place for the client's settings.

A command that meets a connection Redis has closed (Redis restarted or failed over, an idle
connection cut) is sent again on a fresh connection, a few times with a short backoff, instead
of failing the request that happened to pick the dead connection from the pool. (A client
made with ``Redis.from_url`` does not retry unless told to.)
"""

from __future__ import annotations

from typing import Any

RETRIES = 3


def redis_client(url: str, *, password: str | None, decode_responses: bool,
                 socket_timeout: float, **extra: Any) -> Any:
    # redis is imported only when Redis is used (importing it loads a telemetry SDK).
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    return aioredis.Redis.from_url(
        url, password=password, decode_responses=decode_responses, socket_connect_timeout=5,
        socket_timeout=socket_timeout, retry=Retry(ExponentialBackoff(cap=1.0, base=0.05),
                                                   RETRIES), **extra)
