"""Cache notices between replicas: a tag moved or was removed, an image was deleted, a
repository was created (the catalog).

With the Redis state backend every replica publishes such a change on the channel
``<prefix>cache`` once ECR has taken it, and every replica listens there and drops the
answers its pull caches hold for it. A replica that loses its subscription (Redis restarted,
network cut) may have missed notices: it forgets everything it cached, when the loss is
noticed and again once it listens again. So does a replica that took Redis as down
(gateway/state/health.py) while its subscription looked alive: a frozen Redis (SIGSTOP, a
stalled host) breaks no connection, so the listener PINGs Redis every ``ping_every`` seconds
(no answer: Redis taken as down) and looks every ``_LOOK_UP_EVERY`` whether any command
took it as down meanwhile. A replica whose notice could not be published (the change is in
ECR all the same) publishes ``{"from": <replica id>, "kind": "flush"}`` once Redis answers
again, and every other replica forgets everything it cached: one that never noticed the
outage would otherwise keep serving the old tag until ``cache.tag_ttl_seconds``. Without
Redis there is nothing to tell: other writers are seen within the caches' own bounds
(``cache.tag_ttl_seconds``, ``cache.manifest_revalidate_seconds``).

A write is answered only once the other replicas have applied its notice: each one that
applies a notice publishes its id on the publisher's own channel ``<prefix>ack:<replica
id>`` (which every replica listens to along with ``<prefix>cache``), and the publisher waits
for as many as PUBLISH reached other replicas (at most ``ACK_WITHIN`` seconds; a replica
that is slower is logged and then sees the change within the caches' bounds). Without that
wait a client whose next request reaches another replica could still be answered from that
replica's cache, the notice being on its way. (On a Redis Cluster PUBLISH counts only the
subscribers of the node that took it: the wait then covers the replicas listening on that
node.) An acknowledgment takes no memory in Redis: a Redis at ``maxmemory`` (``noeviction``
refuses every write that may take memory, but not PUBLISH) delays no write.

A notice is JSON: ``{"from": <replica id>, "id": <notice id>, "kind": "tag" | "manifest" |
"repository" | "repository_gone", "repo": [registry id, region, repository], "ref": <tag,
digest or repository>, "acks": "publish"}``. A replica that does not know a kind drops the
repository's kept tag lists only (an earlier version logs a ``flush`` as malformed and
ignores it). A notice without ``acks`` comes from an earlier version,
which waits for acknowledgments pushed onto ``<prefix>ack:{<notice id>}``: it gets them
there (during a rolling upgrade; a list refused by a full Redis delays that write by
``ACK_WITHIN``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.state.connect import RedisConnection

log = logging.getLogger(__name__)

RepoKey = tuple[str | None, str, str]
Apply = Callable[[str, RepoKey, str], None]  # kind, repository, tag or digest
# How long a write waits for the other replicas to apply its notice.
ACK_WITHIN = 1.0
# How often the listener looks up from its subscription to see whether Redis was taken as
# down meanwhile (a frozen Redis breaks no subscription: nothing tells it otherwise).
_LOOK_UP_EVERY = 0.5


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


@dataclass
class _Acks:
    """The acknowledgments a notice of this replica's waits for."""

    needed: int = 0  # 0: PUBLISH has not answered yet
    confirmed: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class _Applied:
    """A notice another replica sent and this one applied: ``by_publish``, acknowledged on
    ``sender``'s channel, else (an earlier version's notice) pushed onto its list."""

    id: str
    sender: str
    by_publish: bool


class RedisCacheEvents:
    def __init__(self, connection: RedisConnection, prefix: str, *,
                 ping_every: float = 5.0) -> None:
        """``ping_every``: how often the listener PINGs Redis, to learn that Redis stopped
        answering while its subscription looks alive."""
        # redis is imported only when Redis is used (importing it loads a telemetry SDK).
        from redis.exceptions import RedisError

        from gateway.state.health import StateStoreDown

        self._errors: tuple[type[Exception], ...] = (RedisError, OSError)
        self._down: type[Exception] = StateStoreDown  # said once for the outage
        self._health = connection.health
        self._redis: Any = connection.client(decode_responses=True, health_check_interval=5)
        self._prefix = prefix
        self._channel = f"{prefix}cache"
        self._id = uuid.uuid4().hex
        self._ping_every = ping_every
        self._listening = False  # subscribed: PUBLISH's count includes this replica
        self._task: asyncio.Task[None] | None = None
        # A notice of this replica's was not published: the others are told to flush.
        self._unsent = False
        self._telling: asyncio.Task[None] | None = None
        # Notice id -> the acknowledgments this replica's notice still waits for.
        self._waiting: dict[str, _Acks] = {}

    def _ack_channel(self, replica: str) -> str:
        return f"{self._prefix}ack:{replica}"

    def _ack_key(self, notice: str) -> str:  # an earlier version's acknowledgments
        return f"{self._prefix}ack:{{{notice}}}"

    async def publish(self, kind: str, repo: RepoKey, ref: str) -> None:
        notice_id = uuid.uuid4().hex
        notice = json.dumps({"from": self._id, "id": notice_id, "kind": kind,
                             "repo": list(repo), "ref": ref, "acks": "publish"})
        # Listed before PUBLISH: an acknowledgment may arrive before its answer.
        acks = self._waiting[notice_id] = _Acks()
        try:
            receivers = int(await self._redis.publish(self._channel, notice))
            others = receivers - (1 if self._listening else 0)
            if others > 0:
                await self._acknowledged(notice_id, acks, others)
        except self._errors as exc:
            # The change itself is done in ECR, but a replica that never lost its
            # subscription (Redis frozen, not restarted) would serve the old answer until
            # its cache's bound: every replica is told to flush once Redis answers again.
            self._tell_to_flush()
            if not isinstance(exc, self._down):
                log.warning("cache notice for %s %s not sent: %s: %s", kind, ref,
                            type(exc).__name__, str(exc)[:120])
        finally:
            del self._waiting[notice_id]

    def _tell_to_flush(self) -> None:
        self._unsent = True
        if self._telling is None or self._telling.done():
            # A context of its own: not the request's whose notice was lost.
            self._telling = asyncio.create_task(self._flush_notice(),
                                                context=contextvars.Context())

    async def _flush_notice(self) -> None:
        """Publish ``flush`` once Redis answers again (again if a notice is lost
        meanwhile)."""
        while self._unsent:
            await self._health.answering()
            self._unsent = False
            try:
                await self._redis.publish(self._channel,
                                          json.dumps({"from": self._id, "kind": "flush"}))
            except self._errors:
                self._unsent = True
                await asyncio.sleep(self._health.probe_every)

    async def _acknowledged(self, notice_id: str, acks: _Acks, others: int) -> None:
        """Wait until ``others`` replicas applied the notice (or ``ACK_WITHIN`` passed)."""
        acks.needed = others
        if acks.confirmed >= others:
            return
        try:
            await asyncio.wait_for(acks.done.wait(), ACK_WITHIN)
        except TimeoutError:
            log.warning("cache notice %s: %d of %d other replicas applied it within "
                        "%.1fs; the others see the change within the caches' bounds",
                        notice_id, acks.confirmed, others, ACK_WITHIN)

    def _confirmed(self, notice_id: str) -> None:
        """Another replica acknowledged this replica's notice ``notice_id``."""
        acks = self._waiting.get(notice_id)
        if acks is not None:
            acks.confirmed += 1
            if acks.needed and acks.confirmed >= acks.needed:
                acks.done.set()

    async def _acknowledge(self, notice: _Applied) -> None:
        try:
            if notice.by_publish:
                await self._redis.publish(self._ack_channel(notice.sender), notice.id)
                return
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.rpush(self._ack_key(notice.id), "1")
                pipe.pexpire(self._ack_key(notice.id), int(ACK_WITHIN * 10_000))
                await pipe.execute()
        except self._errors as exc:  # the publisher stops waiting after ACK_WITHIN
            if not isinstance(exc, self._down):
                log.warning("cache notice %s not acknowledged: %s", notice.id,
                            type(exc).__name__)

    def listen(self, apply: Apply, reset: Callable[[], None]) -> None:
        self._task = asyncio.create_task(self._run(apply, reset))

    async def _run(self, apply: Apply, reset: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.1
        subscribed_before = False
        lost = False  # said, until subscribed again
        while True:
            try:
                outages = self._health.outages
                await self._redis.ping()  # a Cluster client learns its slots before pubsub()
                ping_at = loop.time() + self._ping_every
                async with self._redis.pubsub() as pubsub:
                    # One command: once it listens to notices, it hears acknowledgments.
                    # Notices first: a Cluster client subscribes on the node of the first
                    # channel's slot, the one whose PUBLISH counts every replica.
                    await pubsub.subscribe(self._channel, self._ack_channel(self._id))
                    while True:
                        message = await pubsub.get_message(timeout=_LOOK_UP_EVERY)
                        if loop.time() >= ping_at:  # no answer: taken as down (below)
                            await self._redis.ping()
                            ping_at = loop.time() + self._ping_every
                        if self._health.outages != outages:
                            # Redis was taken as down meanwhile (by this PING or any
                            # command), however briefly: the notices of that time are lost.
                            raise self._down("Redis was taken as down while listening")
                        if message is None:
                            continue
                        if message["channel"] != self._channel:
                            if message["type"] == "message":
                                self._confirmed(str(message["data"]))
                            continue
                        if message["type"] == "subscribe":
                            self._health.answered()  # before the replica's own writes
                            outages = self._health.outages  # the flush below covers them
                            self._listening = True  # PUBLISH counts this replica too
                            reset()  # notices sent while not listening are lost
                            if subscribed_before:  # the client may reconnect on its own
                                log.warning("cache notices: subscribed again after a lost "
                                            "connection; caches flushed")
                            subscribed_before = True
                            lost = False
                            delay = 0.1
                        elif message["type"] == "message":
                            applied = self._apply(message["data"], apply, reset)
                            if applied is not None:
                                await self._acknowledge(applied)
            except asyncio.CancelledError:
                self._listening = False
                raise
            except self._errors as exc:
                self._listening = False
                reset()
                if not lost and not isinstance(exc, self._down):
                    log.warning("cache notices: subscription lost (%s: %s); caches flushed, "
                                "subscribing again", type(exc).__name__, str(exc)[:120])
                lost = True
            if not self._health.up:  # nothing is sent to it until it answers again
                await self._health.answering()
                delay = 0.1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _apply(self, data: str, apply: Apply, reset: Callable[[], None]) -> _Applied | None:
        """Apply another replica's notice; what to acknowledge (None: nothing)."""
        try:
            notice = json.loads(data)
            if notice["from"] == self._id:
                return None
            if notice["kind"] == "flush":  # its notices were lost: anything may have changed
                reset()
                return None
            registry, region, repository = notice["repo"]
            apply(str(notice["kind"]), (registry, region, repository), str(notice["ref"]))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("cache notice ignored (malformed: %s)", type(exc).__name__)
            return None
        notice_id, sender = notice.get("id"), notice["from"]
        if not (isinstance(notice_id, str) and notice_id.isalnum()
                and isinstance(sender, str) and sender.isalnum()):
            return None
        return _Applied(notice_id, sender, notice.get("acks") == "publish")

    async def close(self) -> None:
        for task in (self._task, self._telling):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._redis.aclose()
