"""Cache notices between replicas: a tag moved or was removed, an image was deleted, a
repository was created (the catalog).

With the Redis state backend every replica publishes such a change on the channel
``<prefix>cache`` once ECR has taken it, and every replica listens there and drops the
answers its pull caches hold for it. A replica that loses its subscription (Redis restarted,
network cut) may have missed notices: it forgets everything it cached, when the loss is
noticed and again once it listens again. Without Redis there is nothing to tell: other
writers are seen within the caches' own bounds (``cache.tag_ttl_seconds``,
``cache.manifest_revalidate_seconds``).

A write is answered only once the other replicas have applied its notice: each one that
applies a notice pushes an acknowledgment onto ``<prefix>ack:{<notice id>}``, and the
publisher waits for as many as PUBLISH reached other replicas (at most ``ACK_WITHIN``
seconds; a replica that is slower is logged and then sees the change within the caches'
bounds). Without that wait a client whose next request reaches another replica could
still be answered from that replica's cache, the notice being on its way. (On a Redis
Cluster PUBLISH counts only the subscribers of the node that took it: the wait then covers
the replicas listening on that node.)

A notice is JSON: ``{"from": <replica id>, "id": <notice id>, "kind": "tag" | "manifest" |
"repository" | "repository_gone", "repo": [registry id, region, repository], "ref": <tag,
digest or repository>}``. A replica that does not know a kind drops the repository's kept tag
lists only.
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
# How long a write waits for the other replicas to apply its notice.
ACK_WITHIN = 1.0


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
        self._prefix = prefix
        self._channel = f"{prefix}cache"
        self._id = uuid.uuid4().hex
        self._listening = False  # subscribed: PUBLISH's count includes this replica
        self._task: asyncio.Task[None] | None = None

    def _ack_key(self, notice: str) -> str:
        return f"{self._prefix}ack:{{{notice}}}"

    async def publish(self, kind: str, repo: RepoKey, ref: str) -> None:
        notice_id = uuid.uuid4().hex
        notice = json.dumps({"from": self._id, "id": notice_id, "kind": kind,
                             "repo": list(repo), "ref": ref})
        try:
            receivers = int(await self._redis.publish(self._channel, notice))
            others = receivers - (1 if self._listening else 0)
            if others > 0:
                await self._acknowledged(notice_id, others)
        except self._errors as exc:
            # The change itself is done in ECR; peers see it within the caches' own bounds
            # (and flush everything when their subscription comes back).
            log.warning("cache notice for %s %s not sent: %s: %s", kind, ref,
                        type(exc).__name__, str(exc)[:120])

    async def _acknowledged(self, notice_id: str, others: int) -> None:
        """Wait until ``others`` replicas applied the notice (or ``ACK_WITHIN`` passed)."""
        loop = asyncio.get_running_loop()
        deadline, confirmed = loop.time() + ACK_WITHIN, 0
        key = self._ack_key(notice_id)
        while confirmed < others:
            left = deadline - loop.time()
            if left <= 0:
                log.warning("cache notice %s: %d of %d other replicas applied it within "
                            "%.1fs; the others see the change within the caches' bounds",
                            notice_id, confirmed, others, ACK_WITHIN)
                return
            if await self._redis.blpop([key], timeout=max(left, 0.01)) is not None:
                confirmed += 1  # the list is gone with its last acknowledgment

    async def _acknowledge(self, notice_id: str) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.rpush(self._ack_key(notice_id), "1")
                pipe.pexpire(self._ack_key(notice_id), int(ACK_WITHIN * 10_000))
                await pipe.execute()
        except self._errors as exc:  # the publisher stops waiting after ACK_WITHIN
            log.warning("cache notice %s not acknowledged: %s", notice_id, type(exc).__name__)

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
                            self._listening = True  # PUBLISH counts this replica too
                            reset()  # notices sent while not listening are lost
                            if subscribed_before:  # the client may reconnect on its own
                                log.warning("cache notices: subscribed again after a lost "
                                            "connection; caches flushed")
                            subscribed_before = True
                            delay = 0.1
                        elif message["type"] == "message":
                            notice_id = self._apply(message["data"], apply)
                            if notice_id is not None:
                                await self._acknowledge(notice_id)
            except asyncio.CancelledError:
                self._listening = False
                raise
            except self._errors as exc:
                self._listening = False
                reset()
                log.warning("cache notices: subscription lost (%s: %s); caches flushed, "
                            "retrying in %.1fs", type(exc).__name__, str(exc)[:120], delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _apply(self, data: str, apply: Apply) -> str | None:
        """Apply another replica's notice; its id, to acknowledge (None: nothing to)."""
        try:
            notice = json.loads(data)
            if notice["from"] == self._id:
                return None
            registry, region, repository = notice["repo"]
            apply(str(notice["kind"]), (registry, region, repository), str(notice["ref"]))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("cache notice ignored (malformed: %s)", type(exc).__name__)
            return None
        notice_id = notice.get("id")
        return notice_id if isinstance(notice_id, str) and notice_id.isalnum() else None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._redis.aclose()
