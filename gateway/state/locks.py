"""Locks across replicas: ``SET NX PX`` with a random token, renewed while held, released
only by their holder (Lua compare-and-delete); a dead holder's lock frees itself after its
TTL. Taking a lock already ours succeeds, so a command sent again after a lost answer (a
failover) does not lock its own sender out. Every key is one slot (Redis Cluster)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

_TAKE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class TokenLocks:
    def __init__(self, redis: Any, ttl_ms: int) -> None:
        self.ttl_ms = ttl_ms
        self._take = redis.register_script(_TAKE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def take(self, key: str, token: str) -> bool:
        """Whether ``key`` is now held with ``token`` (Redis errors are the caller's)."""
        return bool(await self._take(keys=[key], args=[token, self.ttl_ms]))

    async def keep(self, key: str, token: str,
                   stalled: Callable[[], bool] | None = None) -> None:
        """Renew the lock while it is ours (run as a task, cancelled on release); with
        ``stalled``, only while that says no: the lock is given up once it says yes."""
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            if stalled is not None and stalled():
                await self.release(key, token)
                return
            with contextlib.suppress(Exception):  # a missed renewal: the TTL decides
                if not await self._renew(keys=[key], args=[token, self.ttl_ms]):
                    return

    async def release(self, key: str, token: str) -> None:
        """Give the lock up if still ours, even while the caller is being cancelled."""
        with contextlib.suppress(Exception):
            await asyncio.shield(self._release(keys=[key], args=[token]))
