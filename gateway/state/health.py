"""Whether the shared Redis answers, and what a command does while it does not.

Every command the gateway sends to Redis (a session read or write, a lock, a staged-blob
record, a fill lock, a cache notice) has ``state.redis_timeout_seconds`` to be answered, the
Redis client's own retries of a lost connection included: a restart, or a Sentinel failover
that ends within it, is ridden through. A command that gets no answer in that time (Redis
stopped or frozen, unreachable, refusing connections, still loading its data, no master)
makes the replica take Redis as *down*:

- every command fails at once (:class:`StateStoreDown`, never sent): a request that needs
  the session store gets ``503 UNAVAILABLE`` with ``Retry-After`` in milliseconds, what can
  do without Redis (a blob cache fill, a cache notice) does without it, and nothing more is
  sent to Redis;
- a ``PING`` on a connection of its own, at once and then every
  ``state.redis_probe_seconds``, tells when Redis answers again: commands go to it again
  from then on, with nothing to restart;
- the cache notices of the outage are taken as lost: the replica flushes its pull caches,
  and tells the others to if a notice of its own was not sent (gateway/state/events.py,
  which watches :attr:`RedisHealth.outages`);
- the log says so once when Redis is taken as down (where it is, never a password, and what
  the command met) and once when it answers again (after how long, how many commands were
  refused meanwhile); ``ecr_gateway_redis_down`` is 1 meanwhile, ``/readyz`` answers 503.

An answer, even an error (a full Redis refusing a write, a script error), is Redis being
there: only no answer counts.

It is the circuit breaker of gateway/ecr/breaker.py made for Redis: there the probe is one
of the clients' own calls, which may wait for an answer as long as a call may; here it is a
PING of the breaker's own, so that no request waits for the probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from redis.asyncio.retry import Retry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.observability.metrics import REDIS_DOWN, REDIS_REFUSED
from gateway.oci import errors as oci
from gateway.oci.errors import OciError

log = logging.getLogger(__name__)

# No answer: the connection refused, reset or timed out, Redis loading its data, no master
# (Sentinel), the deadline passed (asyncio's TimeoutError is an OSError).
_NO_ANSWER = (RedisConnectionError, RedisTimeoutError, OSError)
# What the Redis client's last try of the command being run met (NotingRetry), for the log:
# the deadline cuts the client's retries short, and with them the error it would raise.
_LAST_TRY: contextvars.ContextVar[BaseException | None] = contextvars.ContextVar(
    "redis_last_try", default=None)


class NotingRetry(Retry):
    """The Redis client's retries of a command (or a connection) that met a lost
    connection, each failure noted for :meth:`RedisHealth.guard`."""

    async def call_with_retry(self, do: Callable[[], Awaitable[Any]],
                              fail: Callable[..., Any], is_retryable: Any = None,
                              with_failure_count: bool = False) -> Any:
        def noted(error: Exception, *count: int) -> Any:
            _LAST_TRY.set(error)
            return fail(error, *count)

        return await super().call_with_retry(do, noted, is_retryable, with_failure_count)


class StateStoreDown(RedisConnectionError):
    """Redis is taken as down: the command was not sent, or had no answer in time."""


@contextlib.contextmanager
def needed(message: str) -> Iterator[None]:
    """What a request cannot do without Redis: Redis down, unreachable or refusing (full)
    is 503 UNAVAILABLE with Retry-After and ``message``, not a 500. What went wrong goes to
    the log only, Redis taken as down once for the outage (above), anything else once a
    request: Redis's errors name its address, the keys and the commands (as /readyz, the
    answer says which step failed, never its details)."""
    try:
        yield
    except RedisError as exc:
        if not isinstance(exc, StateStoreDown):
            log.warning("%s: %s: %s", message, type(exc).__name__, str(exc)[:300])
        raise OciError(oci.UNAVAILABLE, {"state_store": "redis"}, message=message,
                       headers={"Retry-After": "1"}) from exc


class RedisHealth:
    def __init__(self, where: str, probe_client: Callable[[], Any], *,
                 timeout: float = 2.0, probe_every: float = 1.0) -> None:
        """``where``: Redis's address as the log may name it (no password);
        ``probe_client``: makes the client the PINGs go through (one per outage)."""
        self.where = where
        self.timeout = timeout
        self.probe_every = probe_every
        self._probe_client = probe_client
        self._down_since: float | None = None
        self._outages = 0
        self._refused = 0
        self._probe: asyncio.Task[None] | None = None
        self._answering = asyncio.Event()
        self._answering.set()

    @property
    def up(self) -> bool:
        """False while Redis is taken as down."""
        return self._down_since is None

    @property
    def outages(self) -> int:
        """How many times Redis was taken as down so far: a listener that finds it grew
        knows Redis was down meanwhile, however short the outage."""
        return self._outages

    async def answering(self) -> None:
        """Return once Redis is not (or no longer) taken as down."""
        await self._answering.wait()

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Run one command: refused at once while Redis is down, else given
        ``timeout`` seconds to be answered."""
        if self._down_since is not None:
            self._refused += 1
            REDIS_REFUSED.inc()
            raise StateStoreDown("Redis is taken as down: not tried")
        noted = _LAST_TRY.set(None)
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except StateStoreDown:
            raise
        except _NO_ANSWER as exc:
            met = _LAST_TRY.get() if isinstance(exc, TimeoutError) else exc
            cause = _described(met or exc)
            self._lost(cause)
            raise StateStoreDown(f"Redis did not answer within {self.timeout:g}s "
                                 f"({cause})") from (met or exc)
        finally:
            _LAST_TRY.reset(noted)

    def _lost(self, cause: str) -> None:
        if self._down_since is not None:
            return  # said once for this outage
        self._down_since = time.monotonic()
        self._outages += 1
        self._refused = 0
        self._answering.clear()
        REDIS_DOWN.set(1)
        log.warning("Redis at %s did not answer within %gs (%s): taken as down; requests "
                    "that need it answer 503 at once while it is pinged every %gs",
                    self.where, self.timeout, cause, self.probe_every)
        # A context of its own: not the request's that met the outage (its id in the log).
        self._probe = asyncio.create_task(self._until_answered(), context=contextvars.Context())

    async def _until_answered(self) -> None:
        client = self._probe_client()
        try:
            while True:
                try:
                    async with asyncio.timeout(self.timeout):
                        await client.ping()
                    break
                except Exception:  # still down (said when it went)
                    await asyncio.sleep(self.probe_every)
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
        self._probe = None
        self.answered()

    def answered(self) -> None:
        """Redis answered (the probe's PING, or a subscription confirmed on a connection
        of its own): commands go to it again."""
        if self._down_since is None:
            return
        down_for, self._down_since = time.monotonic() - self._down_since, None
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
        REDIS_DOWN.set(0)
        self._answering.set()
        log.warning("Redis at %s answers again after %.1fs taken as down (%d commands "
                    "refused meanwhile)", self.where, down_for, self._refused)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe


def _described(exc: BaseException) -> str:
    """An error as the log says it (Redis's errors name its address, never a password)."""
    return f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__
