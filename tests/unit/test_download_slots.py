"""A client's share of proxied blob reads (gateway/oci/limits.py): a read past it waits for
one of the client's own, other clients' reads do not, and past the wait it gets 429."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from gateway.oci.errors import OciError
from gateway.oci.limits import DownloadSlots, Limits


async def test_a_read_past_the_share_waits_for_the_clients_own() -> None:
    slots = DownloadSlots(Limits(max_downloads_per_client=2, download_wait=5.0))
    async with contextlib.AsyncExitStack() as held:
        await held.enter_async_context(slots.hold("addr:a"))
        await held.enter_async_context(slots.hold("addr:a"))
        async with slots.hold("addr:b"):  # another client's share is its own
            pass
        entered = asyncio.Event()

        async def third() -> None:
            async with slots.hold("addr:a"):
                entered.set()

        waiting = asyncio.create_task(third())
        await asyncio.sleep(0.05)
        assert not entered.is_set() and slots.in_progress("addr:a") == 2
    await asyncio.wait_for(waiting, 1.0)  # one of its own ended: it went ahead
    assert entered.is_set() and slots.in_progress("addr:a") == 0


async def test_past_the_wait_a_read_is_refused_with_429() -> None:
    slots = DownloadSlots(Limits(max_downloads_per_client=1, download_wait=0.1))
    async with slots.hold("addr:a"):
        with pytest.raises(OciError) as refused:
            async with slots.hold("addr:a"):
                pass
    assert refused.value.error.status == 429
    assert refused.value.error.code == "TOOMANYREQUESTS"
    assert refused.value.headers == {"Retry-After": "1"}
    assert slots.in_progress("addr:a") == 0


async def test_zero_is_no_bound() -> None:
    slots = DownloadSlots(Limits(max_downloads_per_client=0, download_wait=0.0))
    async with contextlib.AsyncExitStack() as held:
        for _ in range(500):
            await held.enter_async_context(slots.hold("addr:a"))
        assert slots.in_progress("addr:a") == 500
