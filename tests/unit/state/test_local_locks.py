"""The local session store keeps a lock only while someone holds or waits for it: upload
ids a client makes up do not grow the gateway's memory, and the lock still serialises."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from gateway.state.local import LocalSessionStore


async def test_unknown_ids_leave_no_lock_behind(tmp_path: Path) -> None:
    store = LocalSessionStore(tmp_path)
    for _ in range(1000):
        async with store.lock(uuid.uuid4().hex):
            pass
    assert len(store._locks) == 0


async def test_lock_still_serialises_and_is_dropped_after_the_last_waiter(
        tmp_path: Path) -> None:
    store = LocalSessionStore(tmp_path)
    inside = 0
    most = 0

    async def worker() -> None:
        nonlocal inside, most
        async with store.lock("one-id"):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(worker() for _ in range(5)))
    assert most == 1
    assert store._locks == {}


async def test_a_failing_holder_releases_its_entry(tmp_path: Path) -> None:
    store = LocalSessionStore(tmp_path)
    try:
        async with store.lock("boom"):
            raise RuntimeError("handler failed")
    except RuntimeError:
        pass
    assert store._locks == {}
