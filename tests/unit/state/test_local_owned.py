"""The local session store counts each owner's open sessions (limits.max_open_uploads_per_
client): the count and the limit are one step, and a session that finishes, is cancelled,
expires or was written by an older version leaves nothing counted."""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway.ecr.retry import RetryPolicy
from gateway.ecr.staging import StagingStore
from gateway.ecr.uploads import UploadManager
from gateway.state.local import LocalSessionStore
from gateway.state.sessions import SessionLimit, TailBudget, TailsFull, UploadSession, owner_of

ALICE, BOB = owner_of("user:alice"), owner_of("user:bob")


def _session(**fields: Any) -> UploadSession:
    values: dict[str, Any] = {
        "id": uuid.uuid4().hex, "name": "r", "repository": "r", "registry_id": None,
        "route": "", "ecr_upload_id": "u", "part_size": 5 << 20}
    values.update(fields)
    return UploadSession(**values)


async def test_each_owner_has_its_own_count_and_limit(tmp_path: Path) -> None:
    store = LocalSessionStore(tmp_path / "sessions")
    mine = [_session(owner=ALICE) for _ in range(3)]
    for session in mine:
        await store.create(session, max_owned=3)
    with pytest.raises(SessionLimit):
        await store.create(_session(owner=ALICE), max_owned=3)
    await store.create(_session(owner=BOB), max_owned=3)  # someone else's count
    await store.create(_session(), max_owned=3)  # the gateway's own: nobody's
    assert (await store.owned(ALICE), await store.owned(BOB), await store.count()) == (3, 1, 5)
    await store.delete(mine[0].id)
    assert await store.owned(ALICE) == 2
    await store.create(_session(owner=ALICE), max_owned=3)
    await store.delete(uuid.uuid4().hex)  # an id nobody has: nothing changes
    assert await store.owned(ALICE) == 3


async def test_concurrent_creates_never_pass_the_limit(tmp_path: Path) -> None:
    store = LocalSessionStore(tmp_path / "sessions")
    results = await asyncio.gather(
        *(store.create(_session(owner=ALICE), max_owned=2) for _ in range(6)),
        return_exceptions=True)
    assert sum(r is None for r in results) == 2
    assert all(isinstance(r, SessionLimit) for r in results if r is not None)
    assert await store.owned(ALICE) == 2 and await store.count() == 2


async def test_the_count_survives_a_restart_and_older_records_count_for_nobody(
        tmp_path: Path) -> None:
    folder = tmp_path / "sessions"
    store = LocalSessionStore(folder)
    kept = _session(owner=ALICE)
    await store.create(kept, max_owned=5)
    # A record an older version wrote: no owner member at all.
    old = _session()
    header = json.dumps(old.to_dict()).encode()
    (folder / f"{old.id}.session").write_bytes(struct.pack(">I", len(header)) + header)
    again = LocalSessionStore(folder)
    assert await again.count() == 2 and await again.owned(ALICE) == 1
    assert (await again.get(old.id)).owner is None  # type: ignore[union-attr]
    await again.delete(kept.id)
    await again.delete(old.id)
    assert await again.owned(ALICE) == 0 and await again.count() == 0


async def test_idle_expiry_frees_the_owners_count(tmp_path: Path) -> None:
    store = LocalSessionStore(tmp_path / "sessions")
    manager = UploadManager(store, StagingStore(tmp_path / "staging", 1 << 30),
                            RetryPolicy(budget_seconds=1.0),
                            lambda target: None)  # type: ignore[arg-type,return-value]
    await store.create(_session(owner=ALICE, updated_at=time.time() - 600))
    await store.create(_session(owner=ALICE))
    assert await manager.expire_idle(60) == 1
    assert await store.owned(ALICE) == 1


async def _save_tail(store: LocalSessionStore, session: UploadSession, size: int) -> None:
    session.received = session.committed + size
    await store.save(session, b"x" * size, max_owner_tail=5000)


async def test_an_owners_tails_in_the_store_stop_at_the_bound(tmp_path: Path) -> None:
    """``max_owner_tail``: counted per owner, from the files too after a restart; a tail that
    shrinks always fits, and a deleted session's tail is no longer counted."""
    store = LocalSessionStore(tmp_path / "sessions")
    first, second, third, bob = (_session(owner=owner) for owner in (ALICE, ALICE, ALICE, BOB))
    for session in (first, second, third, bob):
        await store.create(session)
    await _save_tail(store, first, 2000)
    await _save_tail(store, second, 2000)
    with pytest.raises(TailBudget):
        await _save_tail(store, third, 1001)
    await _save_tail(store, third, 1000)
    await _save_tail(store, first, 500)  # shrinks
    await _save_tail(store, bob, 5000)  # someone else's bound

    again = LocalSessionStore(tmp_path / "sessions")  # a restart reads the tails back
    with pytest.raises(TailBudget):
        await _save_tail(again, first, 2001)
    await again.delete(second.id)
    await _save_tail(again, first, 3000)


async def test_all_owners_tails_stop_at_the_stores_bound(tmp_path: Path) -> None:
    """``max_tail_bytes``: over all owners, for a request's own (``bounded``) save that makes
    a tail grow; a tail the client was already told of (moved out of its spool) is kept
    past it, and the total is read back from the files after a restart."""
    store = LocalSessionStore(tmp_path / "sessions", max_tail_bytes=3000)
    alice, bob, carol = (_session(owner=owner) for owner in (ALICE, BOB, owner_of("user:c")))
    for session in (alice, bob, carol):
        await store.create(session)
    for session, size in ((alice, 2000), (bob, 1000)):
        session.received = size
        await store.save(session, b"x" * size, bounded=True)
    carol.received = 1
    with pytest.raises(TailsFull):
        await store.save(carol, b"x", bounded=True)
    await store.save(carol, b"x")  # not a request's growth: kept
    alice.received = 500
    await store.save(alice, b"x" * 500, bounded=True)  # shrinks
    again = LocalSessionStore(tmp_path / "sessions", max_tail_bytes=3000)
    bob.received = 2499
    await again.save(bob, b"x" * 2499, bounded=True)
    bob.received = 2500
    with pytest.raises(TailsFull):
        await again.save(bob, b"x" * 2500, bounded=True)
    await again.delete(alice.id)
    await again.save(bob, b"x" * 2500, bounded=True)
