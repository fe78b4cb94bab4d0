"""RedisSessionStore against a real redis-server: record and tail written together, the
cross-replica lock, the compare-and-set that keeps a stalled replica from overwriting newer
state, idle expiry, each client's count of open sessions and the health check. Two store
objects stand for two replicas."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import OutOfMemoryError

from gateway.ecr.retry import RetryPolicy
from gateway.ecr.staging import StagingStore
from gateway.ecr.uploads import UploadManager
from gateway.oci.errors import OciError
from gateway.state.connect import RedisConnection
from gateway.state.redis import RedisSessionStore
from gateway.state.sessions import SessionLimit, TailsFull, UploadSession, owner_of
from tests.support.redis import RedisServer


def _session(**fields: object) -> UploadSession:
    values: dict[str, object] = {
        "id": uuid.uuid4().hex, "name": "team/app", "repository": "team/app",
        "registry_id": None, "route": "", "ecr_upload_id": "u-1", "part_size": 10 << 20}
    values.update(fields)
    return UploadSession(**values)  # type: ignore[arg-type]


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[tuple[RedisSessionStore,
                                                                   RedisSessionStore]]:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    connection = RedisConnection(redis_server.url)
    a = RedisSessionStore(connection, prefix=prefix, lock_ttl=1.0, lock_wait=5.0)
    b = RedisSessionStore(connection, prefix=prefix, lock_ttl=1.0, lock_wait=5.0)
    yield a, b
    await a.close()
    await b.close()


async def test_record_and_tail_round_trip_between_replicas(
        stores: tuple[RedisSessionStore, RedisSessionStore]) -> None:
    a, b = stores
    session = _session()
    await a.create(session)
    assert await b.tail(session.id) == b""
    async with a.lock(session.id):
        mine = await a.get(session.id)
        assert mine is not None
        mine.received, mine.committed = 7_000_123, 5 << 20
        tail = bytes(range(256)) * 8192
        tail = tail[:mine.tail_length]
        await a.save(mine, tail)
    seen = await b.get(session.id)
    assert seen is not None and (seen.received, seen.committed) == (7_000_123, 5 << 20)
    assert await b.tail(session.id) == tail  # binary-safe, same bytes
    assert await b.count() == 1
    await b.delete(session.id)
    assert await a.get(session.id) is None and await a.count() == 0


async def test_lock_excludes_the_other_replica_until_released(
        stores: tuple[RedisSessionStore, RedisSessionStore]) -> None:
    a, b = stores
    session = _session()
    await a.create(session)
    order: list[str] = []
    held = asyncio.Event()

    async def first() -> None:
        async with a.lock(session.id):
            held.set()
            order.append("a-in")
            await asyncio.sleep(1.5)  # longer than the lock's TTL: renewal keeps it
            order.append("a-out")

    async def second() -> None:
        await held.wait()
        async with b.lock(session.id):
            order.append("b-in")

    await asyncio.gather(first(), second())
    assert order == ["a-in", "a-out", "b-in"]


async def test_lock_of_a_dead_replica_frees_itself(
        stores: tuple[RedisSessionStore, RedisSessionStore], redis_server: RedisServer) -> None:
    a, _ = stores
    session = _session()
    await a.create(session)
    raw = aioredis.Redis.from_url(redis_server.url)
    # A replica that died holding the lock: the key stays until its TTL (1 s) runs out.
    await raw.set(a._lock_key(session.id), "dead-replica", px=1000)
    started = time.monotonic()
    async with a.lock(session.id):
        waited = time.monotonic() - started
    await raw.aclose()
    assert 0.5 < waited < 3.0


async def test_a_replica_that_lost_its_lock_cannot_overwrite_newer_state(
        stores: tuple[RedisSessionStore, RedisSessionStore], redis_server: RedisServer) -> None:
    a, b = stores
    session = _session()
    await a.create(session)
    raw = aioredis.Redis.from_url(redis_server.url)
    async with a.lock(session.id):
        stale = await a.get(session.id)
        assert stale is not None
        # A stalls past its lock (here: the lock vanishes); B takes the session over.
        await raw.delete(a._lock_key(session.id))
        async with b.lock(session.id):
            newer = await b.get(session.id)
            assert newer is not None
            newer.received = newer.committed = 5 << 20
            await b.save(newer, b"")
        stale.received = 3
        with pytest.raises(OciError) as refused:
            await a.save(stale, b"abc")
    await raw.aclose()
    assert refused.value.status == 409
    kept = await b.get(session.id)
    assert kept is not None and kept.received == 5 << 20 and await b.tail(session.id) == b""


async def test_save_checks_the_offsets_the_request_started_from(
        stores: tuple[RedisSessionStore, RedisSessionStore]) -> None:
    """Even while it holds the lock, a request whose starting offsets are no longer the
    stored ones (state written behind its back) is refused rather than doubling bytes."""
    a, b = stores
    session = _session()
    await a.create(session)
    async with a.lock(session.id):
        mine = await a.get(session.id)
        assert mine is not None
        behind = await b.get(session.id)  # no lock: a write the lock did not guard
        assert behind is not None
        behind.received = 10
        await b.save(behind, b"x" * 10)
        mine.received = 4
        with pytest.raises(OciError) as refused:
            await a.save(mine, b"abcd")
    assert "moved on" in str(refused.value.detail)
    assert await b.tail(session.id) == b"x" * 10


async def test_a_write_sent_again_after_a_lost_answer_is_not_refused(
        stores: tuple[RedisSessionStore, RedisSessionStore]) -> None:
    """Redis carried out a save, its answer was lost (connection cut, failover) and the client
    library sends it again: the store finds its own write done, where a check of the
    starting offsets alone would see them moved and refuse; the lock likewise."""
    a, _ = stores
    session = _session()
    await a.create(session)
    async with a.lock(session.id):
        mine = await a.get(session.id)
        assert mine is not None
        mine.received = 6
        first = UploadSession.from_dict(mine.to_dict())
        await a.save(mine, b"abcdef")
        held = a._held(session.id)
        assert held is not None
        held.received, held.committed = 0, 0  # as before the answer arrived
        await a.save(first, b"abcdef")  # the same write again
        assert await a._mutex.take(a._lock_key(session.id), held.token)
    assert await a.tail(session.id) == b"abcdef"


async def test_idle_lists_old_sessions_and_forgets_vanished_ones(
        stores: tuple[RedisSessionStore, RedisSessionStore], redis_server: RedisServer) -> None:
    a, b = stores
    old, fresh, gone = (_session(updated_at=time.time() - 600), _session(),
                        _session(updated_at=time.time() - 600))
    for session in (old, fresh, gone):
        await a.create(session)
    raw = aioredis.Redis.from_url(redis_server.url)
    await raw.delete(a._key(gone.id))  # expired by Redis itself
    await raw.aclose()
    idle = await b.idle(time.time() - 60)
    assert [s.id for s in idle] == [old.id]
    assert await b.count() == 2  # the vanished one left the index


async def test_the_finished_sweep_reads_only_completed_sessions(
        stores: tuple[RedisSessionStore, RedisSessionStore], redis_server: RedisServer) -> None:
    """Completed sessions expire a minute after their last use, open ones after an hour: the
    sweep that runs every few seconds reads the completed ones, not every open session that
    has been quiet for a minute."""
    a, b = stores
    quiet = [_session(updated_at=time.time() - 300) for _ in range(20)]
    done = _session()
    for session in (*quiet, done):
        await a.create(session)
    async with a.lock(done.id):
        current = await a.get(done.id)
        assert current is not None
        current.completed = "sha256:" + "0" * 64
        current.updated_at = time.time() - 300
        await a.save(current, b"")
    raw = aioredis.Redis.from_url(redis_server.url)
    reads = (await raw.info("commandstats")).get("cmdstat_hmget", {}).get("calls", 0)
    now = time.time()
    found = await b.idle(now - 3600, now - 60)
    reads = (await raw.info("commandstats"))["cmdstat_hmget"]["calls"] - reads
    assert [s.id for s in found] == [done.id]
    assert reads == 1
    assert {s.id for s in await b.idle(now - 60)} == {s.id for s in (*quiet, done)}
    await b.delete(done.id)
    assert await b.idle(now - 3600, now) == []
    assert await raw.zcard(a._finished) == 0
    await raw.aclose()


async def test_records_a_gateway_did_not_write_are_ignored(
        stores: tuple[RedisSessionStore, RedisSessionStore], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """The attacker can write to Redis: a record whose id is a path (or another session's
    id) must never name the spool file a replica appends to, reads, or deletes."""
    a, _ = stores
    raw = aioredis.Redis.from_url(redis_server.url)
    forged = {"../../../../tmp/target": _session(id="../../../../tmp/target"),
              uuid.uuid4().hex: _session(),  # a genuine-looking record filed under another id
              uuid.uuid4().hex: None}  # not JSON at all
    for key_id, session in forged.items():
        record = b"{not json" if session is None else json.dumps(session.to_dict()).encode()
        await raw.hset(a._key(key_id), mapping={"record": record, "tail": b"",
                                                "received": "0", "committed": "0"})
        await raw.zadd(a._index, {key_id: 1.0})
    for key_id in forged:
        assert await a.get(key_id) is None, key_id
    assert await a.idle(time.time()) == []  # nor does the sweep act on them
    assert await raw.zcard(a._index) == 0
    await raw.aclose()
    staging = StagingStore(tmp_path / "staging", max_bytes=1 << 20)
    with pytest.raises(ValueError):
        staging.spool_path("../../../../tmp/target")


async def test_ping_fails_when_redis_is_unreachable() -> None:
    from tests.support.clients import free_port

    store = RedisSessionStore(RedisConnection(f"redis://127.0.0.1:{free_port()}/0"))
    with pytest.raises(Exception) as failed:
        await store.ping()
    await store.close()
    # What failed is the cause's (logged), never the answer's (a client may read it).
    assert "connect" in str(failed.value.__cause__).lower()
    assert "127.0.0.1" not in str(failed.value)


async def test_the_first_command_after_a_redis_restart_succeeds(tmp_path: Path) -> None:
    """Every pooled connection died with the old Redis: the next command reconnects rather
    than answering 503 to the request that picked it (and every later one with a dead
    connection)."""
    with RedisServer(tmp_path / "redis", password="restart-pw") as server:
        store = RedisSessionStore(RedisConnection(server.url, password="restart-pw"), lock_ttl=1.0)
        session = _session()
        await store.create(session)
        server.stop()
        server.start()  # empty: this Redis keeps nothing
        assert await store.get(session.id) is None
        await store.create(session)
        async with store.lock(session.id):
            assert await store.count() == 1
        await store.close()


ALICE, BOB = owner_of("user:alice"), owner_of("user:bob")


async def test_an_owners_sessions_are_counted_for_every_replica(
        stores: tuple[RedisSessionStore, RedisSessionStore]) -> None:
    """Creates on both replicas at once never pass the owner's limit, and a session deleted
    on either leaves the count."""
    a, b = stores
    results = await asyncio.gather(
        *(store.create(_session(owner=ALICE), max_owned=3) for store in (a, b) * 5),
        return_exceptions=True)
    assert sum(r is None for r in results) == 3, results
    assert all(isinstance(r, SessionLimit) for r in results if r is not None)
    assert await a.owned(ALICE) == await b.owned(ALICE) == 3
    assert await a.count() == 3  # a refused create left no session behind
    await b.create(_session(owner=BOB), max_owned=3)  # someone else's count
    await a.create(_session(), max_owned=3)  # the gateway's own: nobody's
    assert await b.owned(BOB) == 1 and await a.count() == 5
    alice = [s for s in await a.idle(time.time() + 1) if s.owner == ALICE]
    assert len(alice) == 3
    await b.delete(alice[0].id)
    assert await a.owned(ALICE) == 2
    await a.create(_session(owner=ALICE), max_owned=3)
    with pytest.raises(SessionLimit):
        await b.create(_session(owner=ALICE), max_owned=3)


async def test_the_owner_survives_saves_and_stays_out_of_the_record(
        stores: tuple[RedisSessionStore, RedisSessionStore], redis_server: RedisServer) -> None:
    """The record field reads the same as before (an older replica reads it); the owner is a
    field of its own, kept through every save."""
    a, b = stores
    session = _session(owner=ALICE)
    await a.create(session)
    async with b.lock(session.id):
        mine = await b.get(session.id)
        assert mine is not None and mine.owner == ALICE
        mine.received = 3
        await b.save(mine, b"abc")
    raw = aioredis.Redis.from_url(redis_server.url)
    record = json.loads(await raw.hget(a._key(session.id), "record"))
    assert "owner" not in record and UploadSession.from_dict(record).id == session.id
    assert await raw.pttl(a._owner_key(ALICE)) > 0  # leaves nothing behind for ever
    # A record an older version wrote: no owner field, counted for nobody.
    old = _session()
    await raw.hset(a._key(old.id), mapping={"record": json.dumps(old.to_dict()), "tail": b"",
                                            "received": "0", "committed": "0"})
    await raw.aclose()
    found = await a.get(old.id)
    assert found is not None and found.owner is None
    await a.delete(old.id)
    assert (await a.get(session.id)).owner == ALICE  # type: ignore[union-attr]
    assert await a.owned(ALICE) == 1
    await a.delete(session.id)
    assert await a.owned(ALICE) == 0


async def test_expired_and_vanished_sessions_leave_the_count(
        stores: tuple[RedisSessionStore, RedisSessionStore], redis_server: RedisServer,
        tmp_path: Path) -> None:
    a, b = stores
    idle, vanished, live = (_session(owner=ALICE, updated_at=time.time() - 600),
                            _session(owner=ALICE), _session(owner=ALICE))
    for session in (idle, vanished, live):
        await a.create(session, max_owned=3)
    manager = UploadManager(b, StagingStore(tmp_path / "staging", 1 << 30),
                            RetryPolicy(budget_seconds=1.0),
                            lambda target: None)  # type: ignore[arg-type,return-value]
    assert await manager.expire_idle(60) == 1  # the idle sweep
    assert await a.owned(ALICE) == 2
    raw = aioredis.Redis.from_url(redis_server.url)
    await raw.delete(a._key(vanished.id))  # expired by Redis itself
    assert await b.owned(ALICE) == 1
    assert await raw.zrange(a._owner_key(ALICE), 0, -1) == [live.id.encode()]
    # At the limit, a vanished session is found and dropped before anyone is refused.
    other = _session(owner=ALICE)
    await a.create(other, max_owned=2)
    await raw.delete(a._key(other.id))
    await b.create(_session(owner=ALICE), max_owned=2)
    assert await a.owned(ALICE) == 2
    await raw.aclose()


async def test_tails_over_all_owners_are_bounded_across_replicas(
        redis_server: RedisServer) -> None:
    """The store's bound over all owners (``limits.max_upload_tail_bytes``), counted in
    Redis: one replica's tails count for the other, a save that shrinks or empties a tail is
    never refused, and a session that expired on its own (no delete: every replica died)
    stops counting once its time has passed."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    connection = RedisConnection(redis_server.url)
    a, b = (RedisSessionStore(connection, prefix=prefix, lock_ttl=1.0, expire_after=1.0,
                              max_tail_bytes=100) for _ in range(2))
    try:
        first = _session(owner=ALICE, received=80)
        second = _session(owner=owner_of("addr:203.0.113.9"), received=30)
        for session in (first, second):
            await a.create(session)
        await a.save(first, b"x" * 80, bounded=True)
        with pytest.raises(TailsFull):
            await b.save(second, b"y" * 30, bounded=True)
        assert await b.tail(second.id) == b""  # nothing of it saved
        second.received = 20
        await b.save(second, b"y" * 20, bounded=True)  # fits
        second.received = 40
        await b.save(second, b"y" * 40)  # a save that is not a request's own is never refused
        first.committed = 60
        await a.save(first, b"x" * 20, bounded=True)  # shrinks
        second.received = 80
        await b.save(second, b"y" * 80, bounded=True)
        await b.delete(second.id)
        await a.save(_session(received=80), b"z" * 80, bounded=True)  # room again

        await asyncio.sleep(1.2)  # every session's hash expired without a delete
        assert await a.get(first.id) is None
        late = _session(received=100)
        await b.save(late, b"w" * 100, bounded=True)
        await b.delete(late.id)
        raw = aioredis.Redis.from_url(redis_server.url)
        # Nothing of the count is left once no tail is counted.
        assert not await raw.keys(f"{prefix}*tail*")
        await raw.aclose()
    finally:
        await a.close()
        await b.close()


async def test_a_creation_cut_short_leaves_no_session(redis_server: RedisServer) -> None:
    """Redis refuses the step after the session's hash is written (counting it for its
    owner): the client is told 503, and the session it never learned of is gone."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    store = RedisSessionStore(RedisConnection(redis_server.url), prefix=prefix,
                              lock_ttl=1.0, expire_after=7200)
    raw = aioredis.Redis.from_url(redis_server.url)
    owner = owner_of("user:alice")
    try:
        await raw.set(f"{prefix}owner:{{{owner}}}", "not a sorted set")  # WRONGTYPE there
        with pytest.raises(OciError) as refused:
            await store.create(_session(owner=owner), max_owned=10)
        assert refused.value.status == 503
        assert await raw.keys(f"{prefix}session:*") == []
    finally:
        await raw.aclose()
        await store.close()


async def test_a_creation_cut_short_expires_within_a_lock_ttl(redis_server: RedisServer) -> None:
    """The same where the session cannot be deleted either (Redis gone by then, the process
    dead): its hash expires within ``lock_ttl``, not with an idle session's expiry."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    user = f"creator{uuid.uuid4().hex[:6]}"
    raw = aioredis.Redis.from_url(redis_server.url)
    await raw.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all",
                              "-evalsha", "-eval", "-del", "-unlink")
    port = redis_server.url.rsplit(":", 1)[1]
    store = RedisSessionStore(RedisConnection(f"redis://{user}:pw@127.0.0.1:{port}"),
                              prefix=prefix, lock_ttl=2.0, expire_after=7200)
    try:
        with pytest.raises(OciError) as refused:
            await store.create(_session(owner=owner_of("user:alice")), max_owned=10)
        assert refused.value.status == 503
        keys = await raw.keys(f"{prefix}session:*")
        assert len(keys) == 1
        assert 0 < await raw.pttl(keys[0]) <= 2000
    finally:
        await raw.execute_command("ACL", "DELUSER", user)
        await raw.aclose()
        await store.close()


async def test_a_session_deleted_from_a_full_redis_leaves_the_tails_count(
        tmp_path: Path) -> None:
    """Redis at ``maxmemory`` (``noeviction``) takes deletes, which free memory: a session
    deleted then (its request had taken the lock before Redis filled up) takes its tail out
    of the count over all owners with it, not at its expiry hours later."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    with RedisServer(tmp_path / "redis", extra=["--maxmemory-policy", "noeviction"]) as server:
        store = RedisSessionStore(RedisConnection(server.url), prefix=prefix, lock_ttl=1.0,
                                  expire_after=7200, max_tail_bytes=1 << 20)
        raw = aioredis.Redis.from_url(server.url)
        try:
            session = _session(owner=ALICE, received=1000)
            await store.create(session)
            await store.save(session, b"t" * 1000, bounded=True)
            assert int(await raw.hget(f"{prefix}all-tails:{{tails}}", "sum")) == 1000
            await raw.config_set("maxmemory", (await raw.info("memory"))["used_memory"] // 2)
            with pytest.raises(OutOfMemoryError):
                await raw.set(f"{prefix}probe", "1")  # full, as the test needs
            await store.delete(session.id)
            assert await store.get(session.id) is None
            assert not await raw.keys(f"{prefix}*tail*")
        finally:
            await raw.aclose()
            await store.close()


async def test_a_session_without_a_counted_tail_leaves_the_count_cleanly(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """A session closed with no tail counted (a blob put whole, a tail already sent) takes
    nothing from the count over all owners, and the entries past their time still leave it.
    The script added its tail's bytes negated, 0 as "-0", which Redis refuses as not an
    integer: each such close failed (ResponseError), logged that its tail stays counted, and
    left the entries past their time where they were."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    store = RedisSessionStore(RedisConnection(redis_server.url), prefix=prefix,
                              max_tail_bytes=1 << 20)
    raw = aioredis.Redis.from_url(redis_server.url)
    all_tails, due = f"{prefix}all-tails:{{tails}}", f"{prefix}tail-due:{{tails}}"
    try:
        counted = _session(owner=ALICE, received=1000)
        await store.create(counted)
        await store.save(counted, b"t" * 1000, bounded=True)
        await raw.zadd(due, {"long-gone": 1})  # past its time, its tail no longer counted
        whole = _session(owner=ALICE)
        await store.create(whole)
        with caplog.at_level(logging.WARNING, logger="gateway.state.redis"):
            await store.delete(whole.id)
        assert "stays counted" not in caplog.text
        assert await raw.zscore(due, "long-gone") is None
        assert int(await raw.hget(all_tails, "sum")) == 1000
        await store.delete(counted.id)
        assert not await raw.keys(f"{prefix}*tail*")
    finally:
        await raw.aclose()
        await store.close()
