"""One fetch per blob across replicas (Redis state backend).

A replica about to fetch a blob from storage or from an upstream registry, on a first read
that other replicas may be making at the same moment, first takes the blob's fill lock
``<prefix>fill:{<what>}`` (``SET NX PX`` with a random token, renewed while the fill runs,
released only by its holder; a holder that dies frees it after ``state.lock_ttl_seconds``).
Before taking it, and again each time the lock goes, a replica asks ``done`` whether an
earlier fill left what it needs (a copy on another replica, the layer in ECR); the others
wait for the lock to go (polling: a fill lasts as long as the blob takes to arrive, so a
notice would save little). If the fill left nothing (it failed, or its holder died), the
next one takes the lock and fetches.

Replicas that hold a filled copy record themselves in ``<prefix>filled:{<what>}`` (a hash
of replica URL → "", expiring after ``keep_seconds``) for the others to read it from.

Each fill another replica made for this one counts in
``ecr_gateway_singleflight_shared_total{kind="replica_fill"}``. Redis trouble never stops a
read: without an answer the replica fetches on its own, as it would without Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from gateway.observability.metrics import SHARED_CALLS
from gateway.state.connect import RedisConnection
from gateway.state.locks import TokenLocks
from gateway.state.peers import replica_urls

log = logging.getLogger(__name__)

# Waiting for another replica's fill: polls start fast (small blobs) and slow down.
_POLL_FIRST, _POLL_MAX = 0.02, 0.5


class FillLocks:
    def __init__(self, connection: RedisConnection, prefix: str, *, ttl: float = 15.0,
                 max_wait: float = 3600.0, keep_seconds: float = 3600.0) -> None:
        from redis.exceptions import RedisError

        from gateway.state.health import StateStoreDown

        self._errors: tuple[type[Exception], ...] = (RedisError, OSError)
        self._down: type[Exception] = StateStoreDown  # said once for the outage
        self._redis: Any = connection.client(decode_responses=True)
        self._prefix = prefix
        self._locks = TokenLocks(self._redis, max(int(ttl * 1000), 1000))
        self._max_wait = max_wait
        self._keep_ms = max(int(keep_seconds * 1000), 1000)

    def _lock(self, what: str) -> str:
        return f"{self._prefix}fill:{{{what}}}"

    def _filled(self, what: str) -> str:
        return f"{self._prefix}filled:{{{what}}}"

    @asynccontextmanager
    async def first(self, what: str, done: Callable[[], Awaitable[bool]],
                    stalled: Callable[[], bool] | None = None) -> AsyncIterator[bool]:
        """True: this replica makes the fill (the lock is held until the block ends, or
        until ``stalled``, asked at each renewal, says the fill no longer keeps up: the
        others then fetch on their own rather than wait for a client that stopped reading);
        False: another replica made it and ``done`` says what it left is there."""
        key, token = self._lock(what), uuid.uuid4().hex
        deadline = time.monotonic() + self._max_wait
        waited = False
        while True:
            if await done():
                SHARED_CALLS.labels("replica_fill").inc()
                yield False
                return
            try:
                taken = await self._locks.take(key, token)
            except self._errors as exc:
                if not isinstance(exc, self._down):
                    log.warning("fill lock of %s not taken (%s): filling without it", what,
                                type(exc).__name__)
                yield True
                return
            if taken:
                break
            if not waited:
                log.info("%s is being filled by another replica: waiting for it", what)
            waited = True
            if not await self._wait_free(key, deadline):
                yield True  # waited long enough: fill without it
                return
        renewer = asyncio.create_task(self._locks.keep(key, token, stalled))
        try:
            yield True
        finally:
            renewer.cancel()
            await self._locks.release(key, token)

    async def _wait_free(self, key: str, deadline: float) -> bool:
        """Wait for ``key`` to go; False past the deadline (or when Redis cannot tell)."""
        delay = _POLL_FIRST
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)
            try:
                if not await self._redis.exists(key):
                    return True
            except self._errors:
                return False
        return False

    async def record(self, what: str, holder: str) -> None:
        """``holder`` (a replica URL) keeps a filled copy of ``what``."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._filled(what), holder, "")
                pipe.pexpire(self._filled(what), self._keep_ms)
                await pipe.execute()
        except self._errors as exc:
            if not isinstance(exc, self._down):
                log.warning("filled copy of %s not recorded: %s", what, type(exc).__name__)

    async def forget(self, what: str, holder: str) -> None:
        with contextlib.suppress(*self._errors):
            await self._redis.hdel(self._filled(what), holder)

    async def holders(self, what: str) -> list[str]:
        try:
            found = await self._redis.hkeys(self._filled(what))
        except self._errors:
            return []
        return sorted(replica_urls([str(url) for url in found], what))

    async def close(self) -> None:
        await self._redis.aclose()
