"""Cache notices between replicas: a tag moved or was removed, an image was deleted.

With the Redis state backend every replica publishes such a change on the channel
``<prefix>cache`` once ECR has taken it, and every replica listens there and drops the
answers its pull caches hold for it. A replica that loses its subscription (Redis restarted,
network cut) may have missed notices: it forgets everything it cached, when the loss is
noticed and again once it listens again. Without Redis there is nothing to tell: other
writers are seen within the caches' own bounds (``cache.tag_ttl_seconds``,
``cache.manifest_revalidate_seconds``).

A notice is JSON: ``{"from": <replica id>, "kind": "tag" | "manifest", "repo": [registry id,
region, repository], "ref": <tag or digest>}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from gateway.state.connect import RedisConnection

log = logging.getLogger(__name__)

RepoKey = tuple[str | None, str, str]
Apply = Callable[[str, RepoKey, str], None]  # kind, repository, tag or digest


class CacheEvents(Protocol):
    async def publish(self, kind: str, repo: RepoKey, ref: str) -> None: ...

    def listen(self, apply: Apply, reset: Callable[[], None]) -> None:
        """Call ``apply`` for every other replica's notice, ``reset`` when some may have
        been missed."""

    async def close(self) -> None: ...


class NoEvents:
    """One process: nobody to tell."""

    async def publish(self, kind: str, repo: RepoKey, ref: str) -> None:
        return None

    def listen(self, apply: Apply, reset: Callable[[], None]) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisCacheEvents:
    def __init__(self, connection: RedisConnection, prefix: str) -> None:
        # redis is imported only when Redis is used (importing it loads a telemetry SDK).
        from redis.exceptions import RedisError

        self._errors: tuple[type[Exception], ...] = (RedisError, OSError)
        self._redis: Any = connection.client(decode_responses=True, health_check_interval=5)
        self._channel = f"{prefix}cache"
        self._id = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None

    async def publish(self, kind: str, repo: RepoKey, ref: str) -> None:
        notice = json.dumps({"from": self._id, "kind": kind, "repo": list(repo), "ref": ref})
        try:
            await self._redis.publish(self._channel, notice)
        except self._errors as exc:
            # The change itself is done in ECR; peers see it within the caches' own bounds
            # (and flush everything when their subscription comes back).
            log.warning("cache notice for %s %s not sent: %s: %s", kind, ref,
                        type(exc).__name__, str(exc)[:120])

    def listen(self, apply: Apply, reset: Callable[[], None]) -> None:
        self._task = asyncio.create_task(self._run(apply, reset))

    async def _run(self, apply: Apply, reset: Callable[[], None]) -> None:
        delay = 0.1
        subscribed_before = False
        while True:
            try:
                await self._redis.ping()  # a Cluster client learns its slots before pubsub()
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    while True:
                        message = await pubsub.get_message(timeout=5.0)
                        if message is None:
                            continue
                        if message["type"] == "subscribe":
                            reset()  # notices sent while not listening are lost
                            if subscribed_before:  # the client may reconnect on its own
                                log.warning("cache notices: subscribed again after a lost "
                                            "connection; caches flushed")
                            subscribed_before = True
                            delay = 0.1
                        elif message["type"] == "message":
                            self._apply(message["data"], apply)
            except asyncio.CancelledError:
                raise
            except self._errors as exc:
                reset()
                log.warning("cache notices: subscription lost (%s: %s); caches flushed, "
                            "retrying in %.1fs", type(exc).__name__, str(exc)[:120], delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _apply(self, data: str, apply: Apply) -> None:
        try:
            notice = json.loads(data)
            if notice["from"] == self._id:
                return
            registry, region, repository = notice["repo"]
            apply(str(notice["kind"]), (registry, region, repository), str(notice["ref"]))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("cache notice ignored (malformed: %s)", type(exc).__name__)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._redis.aclose()
