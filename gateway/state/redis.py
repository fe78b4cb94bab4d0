"""Upload sessions in Redis, shared by every replica: any replica can continue any session.

Layout (``prefix`` is ``state.key_prefix``):

- ``<prefix>session:{<id>}``: a hash with ``record`` (the session as JSON), ``tail`` (the
  bytes under ECR's minimum part size that wait for the next request), and ``received`` /
  ``committed`` (the offsets, as strings, for the compare-and-set below). It expires on
  its own well after ``uploads.idle_timeout_seconds``, so a cluster that lost every replica
  leaves nothing behind for ever; until its creation is complete (counted for its owner,
  indexed), within ``state.lock_ttl_seconds``. A ``spool`` field names the replica whose
  staging spool holds the upload's bytes (gateway/state/peers.py), an ``owner`` field whom
  the session counts against (:func:`~gateway.state.sessions.owner_of` the client, a
  digest; kept out of ``record`` so that the record reads the same in every version).
- ``<prefix>sessions``: a sorted set of session ids scored by last use (idle expiry, count).
- ``<prefix>finished``: the same for the sessions whose layer was completed (they expire
  sooner): the sweep reads these, not every session idle for a minute.
- ``<prefix>owner:{<owner>}``: a sorted set of the owner's session ids scored by creation
  (``limits.max_open_uploads_per_client``). It expires with the last of its sessions; an id
  is added only once its session's hash exists, removed when the session is deleted, and one
  whose hash is gone (expired on its own, or a replica died between the two deletes) is
  dropped whenever the owner's sessions are counted: a count never includes a closed session.
- ``<prefix>tails:{<owner>}``: a hash of the owner's session ids to the bytes of their tails
  (``limits.max_upload_tail_bytes_per_client``), in the owner's slot. A tail is counted
  there before it is saved; ids no longer in the owner's set are dropped when it is summed.
- ``<prefix>all-tails:{tails}``: a hash of every session id to the bytes of its tail, and
  ``sum`` (``limits.max_upload_tail_bytes``, over all owners), with
  ``<prefix>tail-due:{tails}``, a sorted set of the same ids scored by when their session's
  hash expires (ms): an entry whose session went without a delete (expired on its own, a
  replica died) leaves the sum once that time has passed.
- ``<prefix>lock:{<id>}``: the cross-replica session lock (gateway/state/locks.py).

A request's record and tail are written by one Lua script that first checks that the lock
is still this request's and that the stored offsets are still the ones the request started
from. A replica that dies between two requests therefore leaves the last complete write (the
client resumes from its offset), and a replica that lost its lock (stalled past the lock's
expiry while another took over) cannot overwrite newer state: no byte is lost or doubled.
The script finds its own write already done when a command is sent again after a lost
answer (a failover), and says so instead of refusing.

The session's keys share the hash tag ``{<id>}``, so each script and transaction touches one
Redis Cluster slot; the index is written apart from them (it serves idle expiry and counts
only: a record missing from it still expires with its key, an id whose record is gone is
dropped when met). A single Redis, one behind Sentinel and a Redis Cluster all work
(gateway/state/connect.py); what a failover can lose is in README.md (*Replicas share upload
sessions in Redis*).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from gateway.oci import errors as oci
from gateway.oci.errors import OciError
from gateway.state.connect import RedisConnection
from gateway.state.health import StateStoreDown, needed
from gateway.state.locks import TokenLocks
from gateway.state.sessions import SessionLimit, TailBudget, TailsFull, UploadSession

log = logging.getLogger(__name__)

# KEYS: session, lock. ARGV: record, tail, expiry (ms), lock token, the offsets the request
# started from (received, committed), the new offsets.
_SAVE = """
if redis.call('HGET', KEYS[1], 'record') == ARGV[1] then return 'OK' end
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[4] then return 'LOCK' end
if ARGV[5] ~= '' then
  local offsets = redis.call('HMGET', KEYS[1], 'received', 'committed')
  if not offsets[1] then return 'GONE' end
  if offsets[1] ~= ARGV[5] or offsets[2] ~= ARGV[6] then return 'MOVED' end
end
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'tail', ARGV[2], 'received', ARGV[7],
           'committed', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 'OK'
"""

# KEYS: session. The session's owner (nil: none, or no session), the session deleted. Not a
# MULTI: a Redis out of memory refuses every command queued in one, deletes too.
_DELETE = """
local owner = redis.call('HGET', KEYS[1], 'owner')
redis.call('DEL', KEYS[1])
return owner
"""

# KEYS: the owner's set. ARGV: session id, score, the owner's limit (0: none), expiry (ms).
# 1 once the id is in the set, 0 when the owner has ``limit`` sessions there already.
_CLAIM = """
local limit = tonumber(ARGV[3])
if limit > 0 and not redis.call('ZSCORE', KEYS[1], ARGV[1])
   and redis.call('ZCARD', KEYS[1]) >= limit then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: the owner's set, the owner's tails. ARGV: session id, its tail's bytes, the owner's
# bound (0: none), expiry (ms). -1 once counted; else the bytes the owner's other tails take
# (the tail was not counted). A tail that does not grow is always counted.
_RESERVE = """
local size, bound = tonumber(ARGV[2]), tonumber(ARGV[3])
local before = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if bound > 0 and size > before then
  local held, fields = 0, redis.call('HGETALL', KEYS[2])
  for i = 1, #fields, 2 do
    if fields[i] ~= ARGV[1] then
      if redis.call('ZSCORE', KEYS[1], fields[i]) then held = held + tonumber(fields[i + 1])
      else redis.call('HDEL', KEYS[2], fields[i]) end
    end
  end
  if held + size > bound then return held end
end
if size == 0 then redis.call('HDEL', KEYS[2], ARGV[1]) return -1 end
redis.call('HSET', KEYS[2], ARGV[1], size)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return -1
"""

# KEYS: all tails, their due times. ARGV: session id, its tail's bytes, the bound (0: none),
# now and the session's expiry (ms), '1' when the session is gone (deleted). -1 once
# counted; else the bytes all tails take (the tail was not counted). Entries past their time
# leave first. A tail that does not grow is always counted. Nothing is left once no tail is
# counted. The sum is written before the entries it counts (a Redis out of memory refuses
# the write that may grow it, HINCRBY, not those that shrink, HDEL): a tail is counted before
# it is saved, so one whose save is then refused stays counted. A gone session's entry
# leaves first instead: Redis refuses only a script's first write, so its tail leaves the
# count even then (its bytes are gone with the session). Nothing is added for a tail not
# counted: Lua writes 0 negated as "-0", which HINCRBY refuses as not an integer.
_TOTAL = """
local size, bound = tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[6] == '1' then
  local gone = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  if gone > 0 then redis.call('HINCRBY', KEYS[1], 'sum', -gone) end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4], 'LIMIT', 0, 100)) do
  local due = tonumber(redis.call('HGET', KEYS[1], id) or '0')
  if due > 0 then redis.call('HINCRBY', KEYS[1], 'sum', -due) end
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
local before = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local held = tonumber(redis.call('HGET', KEYS[1], 'sum') or '0')
if bound > 0 and size > before and held - before + size > bound then return held end
redis.call('HINCRBY', KEYS[1], 'sum', size - before)
if size == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], size)
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
end
if redis.call('HLEN', KEYS[1]) == 1 then redis.call('HDEL', KEYS[1], 'sum') end
return -1
"""


def _record(session: UploadSession) -> str:
    """The ``record`` field: the session without its owner (a field of its own)."""
    record = session.to_dict()
    record.pop("owner", None)
    return json.dumps(record)


def _store_errors() -> contextlib.AbstractContextManager[None]:
    """A session store's step Redis did not do: 503 with Retry-After (gateway/state/health.py)."""
    return needed("upload session store unavailable")


@dataclass
class _Held:
    """A session lock this task holds, and the offsets its request started from."""

    token: str
    received: int | None = None
    committed: int | None = None


class RedisSessionStore:
    process_local = False  # replicas share the records, not their staging spools

    def __init__(self, connection: RedisConnection, *, prefix: str = "ecr-gateway:",
                 lock_ttl: float = 15.0, lock_wait: float = 60.0,
                 expire_after: float = 7200.0, max_tail_bytes: int = 0) -> None:
        """``max_tail_bytes``: the tails all sessions may keep in Redis together (0: no
        bound), on top of each owner's bound."""
        self._redis: Any = connection.client(socket_timeout=30, health_check_interval=30)
        self._prefix = prefix
        self._lock_ttl_ms = max(int(lock_ttl * 1000), 1000)
        self._lock_wait = lock_wait
        self._expire_ms = max(int(expire_after * 1000), self._lock_ttl_ms)
        self._save = self._redis.register_script(_SAVE)
        self._delete = self._redis.register_script(_DELETE)
        self._claim = self._redis.register_script(_CLAIM)
        self._reserve = self._redis.register_script(_RESERVE)
        self._total = self._redis.register_script(_TOTAL)
        self._max_tail_bytes = max_tail_bytes
        self._mutex = TokenLocks(self._redis, self._lock_ttl_ms)
        # Session id -> the lock the current task holds on it through this store (a
        # context variable: per asyncio task).
        self._locks: contextvars.ContextVar[dict[str, _Held] | None] = contextvars.ContextVar(
            f"redis_session_locks_{id(self)}", default=None)

    # -- keys -------------------------------------------------------------------------------

    def _key(self, session_id: str) -> str:
        return f"{self._prefix}session:{{{session_id}}}"

    def _lock_key(self, session_id: str) -> str:
        return f"{self._prefix}lock:{{{session_id}}}"

    @property
    def _index(self) -> str:
        return f"{self._prefix}sessions"

    @property
    def _finished(self) -> str:
        return f"{self._prefix}finished"

    def _owner_key(self, owner: str) -> str:
        return f"{self._prefix}owner:{{{owner}}}"

    def _tails_key(self, owner: str) -> str:
        return f"{self._prefix}tails:{{{owner}}}"

    @property
    def _all_tails(self) -> list[str]:
        return [f"{self._prefix}all-tails:{{tails}}", f"{self._prefix}tail-due:{{tails}}"]

    def _held(self, session_id: str) -> _Held | None:
        held = self._locks.get()
        return held.get(session_id) if held else None

    # -- records ----------------------------------------------------------------------------

    async def create(self, session: UploadSession, *, max_owned: int = 0) -> None:
        key = self._key(session.id)
        with _store_errors():
            await self._create(key, session, max_owned)

    async def _create(self, key: str, session: UploadSession, max_owned: int) -> None:
        fields: dict[str, Any] = {"record": _record(session), "tail": b"",
                                  "received": str(session.received),
                                  "committed": str(session.committed)}
        if session.owner:
            fields["owner"] = session.owner
        # Until the session is counted and indexed (other slots: no one script or
        # transaction), its hash lives only as long as a lock: a creation cut short (Redis
        # full or gone, the process dead) leaves no session the client never learned of.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, self._lock_ttl_ms)
            await pipe.execute()
        try:
            # Counted only once the hash exists (so an id without one is a closed session).
            if session.owner and not await self._claimed(session, max_owned):
                raise SessionLimit(max_owned)
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(self._index, {session.id: session.updated_at})
                pipe.pexpire(key, self._expire_ms)
                _, kept = await pipe.execute()
            if not kept:  # creating it took longer than its first expiry
                raise RedisError("the new upload session expired while being stored")
        except BaseException:
            with contextlib.suppress(RedisError):  # else it expires with its first expiry
                await self._redis.delete(key)
            raise

    async def _claimed(self, session: UploadSession, max_owned: int) -> bool:
        """Whether the session now counts against its owner; False when the owner has
        ``max_owned`` open (closed ones that are still listed are dropped first)."""
        assert session.owner
        for attempt in range(2):
            added = await self._claim(keys=[self._owner_key(session.owner)],
                                      args=[session.id, session.created_at, max_owned,
                                            self._expire_ms])
            if int(added) or attempt:
                return bool(int(added))
            await self._owned(session.owner)
        return False

    async def get(self, session_id: str) -> UploadSession | None:
        with _store_errors():
            raw, owner = await self._redis.hmget(self._key(session_id), ["record", "owner"])
        if raw is None:
            return None
        session = _stored(raw, session_id, owner)
        if session is None:
            return None
        held = self._held(session_id)
        if held is not None:  # the request holding the lock starts from these offsets
            held.received, held.committed = session.received, session.committed
        return session

    async def tail(self, session_id: str) -> bytes:
        with _store_errors():
            data = await self._redis.hget(self._key(session_id), "tail")
        return bytes(data) if data else b""

    async def save(self, session: UploadSession, tail: bytes, *,
                   max_owner_tail: int = 0, bounded: bool = False) -> None:
        assert len(tail) == session.tail_length, "tail must match the record"
        held = self._held(session.id)
        expected = ("", "")
        if held is not None and held.received is not None:
            expected = (str(held.received), str(held.committed))
        with _store_errors():
            # Counted first (other slots than the session's): a save that then fails, or
            # that the owner's bound refuses, leaves its tail counted until the session's
            # next save (a refused request's own, cut back) or its end.
            if self._max_tail_bytes:
                await self._count_total(session.id, len(tail), bounded)
            if session.owner and max_owner_tail:
                others = int(await self._reserve(
                    keys=[self._owner_key(session.owner), self._tails_key(session.owner)],
                    args=[session.id, len(tail), max_owner_tail, self._expire_ms]))
                if others >= 0:
                    raise TailBudget(others)
            outcome = await self._save(
                keys=[self._key(session.id), self._lock_key(session.id)],
                args=[_record(session), tail, self._expire_ms,
                      held.token if held else "", *expected,
                      str(session.received), str(session.committed)])
            if outcome in (b"OK", "OK"):
                await self._touched(session)
        outcome = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
        if outcome != "OK":
            reasons = {"LOCK": "another request took over this upload session",
                       "MOVED": "this upload session moved on in another request",
                       "GONE": "this upload session was closed by another request"}
            raise OciError(oci.BLOB_UPLOAD_INVALID,
                           {"upload": session.id, "reason": reasons.get(outcome, outcome)},
                           message="upload session changed under this request; ask for its "
                                   "status (GET) and resume from the offset it gives",
                           status=409)
        if held is not None:
            held.received, held.committed = session.received, session.committed

    async def _count_total(self, session_id: str, size: int, bounded: bool = False, *,
                           gone: bool = False) -> None:
        """Count the session's tail in the bound over all owners (0: no longer counted;
        ``gone``: the session was deleted, its tail leaves the count even from a full Redis);
        ``bounded``: raise :class:`TailsFull` instead, nothing counted, for one that grows
        past it."""
        now = int(time.time() * 1000)
        held = int(await self._total(
            keys=self._all_tails,
            args=[session_id, size, self._max_tail_bytes if bounded else 0, now,
                  now + self._expire_ms, "1" if gone else ""]))
        if held >= 0:
            raise TailsFull(held)

    async def _touched(self, session: UploadSession) -> None:
        """A save went through: the session's place in the index; its owner's set lives as
        long as the session's hash (each is given the same expiry at each write)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self._index, {session.id: session.updated_at})
            if session.completed:
                pipe.zadd(self._finished, {session.id: session.updated_at})
            if session.owner:
                pipe.pexpire(self._owner_key(session.owner), self._expire_ms)
            await pipe.execute()

    async def delete(self, session_id: str) -> None:
        key = self._key(session_id)
        with _store_errors():
            owner = await self._delete(keys=[key])
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zrem(self._index, session_id)
                pipe.zrem(self._finished, session_id)
                if owner:
                    owner = owner.decode() if isinstance(owner, bytes) else str(owner)
                    pipe.zrem(self._owner_key(owner), session_id)
                    pipe.hdel(self._tails_key(owner), session_id)
                await pipe.execute()
        if self._max_tail_bytes:
            try:
                await self._count_total(session_id, 0, gone=True)
            except StateStoreDown:  # its due time takes it out of the count
                pass
            except RedisError as exc:
                log.warning("upload %s: its tail stays counted until the session's expiry: "
                            "%s", session_id, type(exc).__name__)

    # -- the cross-replica lock -------------------------------------------------------------

    @asynccontextmanager
    async def lock(self, session_id: str) -> AsyncIterator[None]:
        key = self._lock_key(session_id)
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self._lock_wait
        delay = 0.005
        while not await self._acquire(key, token):
            if time.monotonic() >= deadline:
                raise OciError(oci.TOOMANYREQUESTS, {"upload": session_id},
                               message="another request is still writing this upload session",
                               headers={"Retry-After": "1"})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        held = _Held(token)
        renewer = asyncio.create_task(self._mutex.keep(key, token))
        locks = dict(self._locks.get() or {})
        locks[session_id] = held
        reset = self._locks.set(locks)
        try:
            yield
        finally:
            self._locks.reset(reset)
            renewer.cancel()
            await self._mutex.release(key, token)

    async def _acquire(self, key: str, token: str) -> bool:
        with _store_errors():
            return await self._mutex.take(key, token)

    # -- housekeeping -----------------------------------------------------------------------

    async def idle(self, older_than: float,
                   finished_older_than: float | None = None) -> list[UploadSession]:
        with _store_errors():
            return await self._idle(older_than, finished_older_than)

    async def _idle(self, older_than: float,
                    finished_older_than: float | None) -> list[UploadSession]:
        ids = await self._redis.zrangebyscore(self._index, "-inf", older_than)
        if finished_older_than is not None:
            finished = await self._redis.zrangebyscore(self._finished, "-inf",
                                                       finished_older_than)
            ids = list(dict.fromkeys([*ids, *finished]))
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for raw_id in ids:
                pipe.hmget(self._key(raw_id.decode()), ["record", "owner"])
            records = await pipe.execute()
        found, vanished = [], []
        for raw_id, (record, owner) in zip(ids, records, strict=True):
            session = None if record is None else _stored(record, raw_id.decode(), owner)
            if session is None:
                vanished.append(raw_id)
            else:
                found.append(session)
        if vanished:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zrem(self._index, *vanished)
                pipe.zrem(self._finished, *vanished)
                await pipe.execute()
        return found

    async def count(self) -> int:
        with _store_errors():
            return int(await self._redis.zcard(self._index))

    async def owned(self, owner: str) -> int:
        with _store_errors():
            return await self._owned(owner)

    async def _owned(self, owner: str) -> int:
        """The owner's sessions whose hash still exists; the others leave its set."""
        key = self._owner_key(owner)
        ids = await self._redis.zrange(key, 0, -1)
        if not ids:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for raw_id in ids:
                pipe.exists(self._key(raw_id.decode()))
            alive = await pipe.execute()
        gone = [raw_id for raw_id, found in zip(ids, alive, strict=True) if not found]
        if gone:
            await self._redis.zrem(key, *gone)
        return len(ids) - len(gone)

    async def ping(self) -> None:
        with _store_errors():
            await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


def _stored(raw: bytes, session_id: str, owner: bytes | None = None) -> UploadSession | None:
    """The record filed under ``session_id`` with the hash's ``owner`` field; None (and a
    warning) for one this gateway did not write: unreadable, or naming another id than its
    key."""
    try:
        session = UploadSession.stored(json.loads(raw), session_id)
    except ValueError:
        session = None
    if session is None:
        log.warning("ignoring a malformed upload session record in Redis (under id %r)",
                    session_id[:80])
    elif owner:
        session.owner = owner.decode(errors="replace")
    return session
