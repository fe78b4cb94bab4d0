"""The referrers budget (gateway/ecr/referrers_budget.py): a read without room waits for
some, then a client past its quarter is refused with 429, anyone else with 503; and a
shared page's room is given back when the last of its readers has sent it."""

from __future__ import annotations

import asyncio

import pytest

from gateway.ecr.referrers import CALL_BYTES, PER_CALL, read_page
from gateway.ecr.referrers_budget import Lease, ReferrersBudget, SharedPages
from gateway.oci.backend import Referrer, ReferrersPage
from gateway.oci.errors import UNAVAILABLE, OciError
from gateway.oci.mediatypes import Descriptor

MiB = 1024 * 1024


async def test_a_client_past_its_quarter_waits_for_its_own_room_then_is_refused() -> None:
    budget = ReferrersBudget(100 * MiB, wait=0.3)
    await budget.take("addr:a", 20 * MiB)
    waiting = asyncio.create_task(budget.take("addr:a", 10 * MiB))  # 30 of 25
    await asyncio.sleep(0.05)
    assert not waiting.done()  # a burst of the client's own reads is served in turn
    await budget.take("addr:b", 20 * MiB)  # another client's room is its own
    budget.give("addr:a", 15 * MiB)
    await waiting  # its own room given back
    started = asyncio.get_running_loop().time()
    with pytest.raises(OciError) as refused:
        await budget.take("addr:a", 15 * MiB)  # 30 of 25, and nothing is given back
    assert asyncio.get_running_loop().time() - started >= 0.25
    assert refused.value.error.status == 429
    assert refused.value.headers == {"Retry-After": "1"}
    assert budget.held == 35 * MiB


async def test_without_room_a_read_waits_then_is_refused() -> None:
    budget = ReferrersBudget(32 * MiB, wait=0.3)
    for client in "abcd":
        await budget.take(f"addr:{client}", 8 * MiB)
    waiting = asyncio.create_task(budget.take("addr:e", 8 * MiB))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    budget.give("addr:a", 8 * MiB)
    await waiting  # the room given back
    with pytest.raises(OciError) as refused:
        await budget.take("addr:f", 8 * MiB)
    assert refused.value.error.status == 503
    assert refused.value.headers == {"Retry-After": "1"}
    assert budget.held == 32 * MiB


async def test_one_read_alone_is_never_refused() -> None:
    budget = ReferrersBudget(MiB)  # smaller than a call
    await budget.take("addr:a", CALL_BYTES)
    assert budget.held == CALL_BYTES


async def test_a_shared_page_is_held_until_its_last_reader_sent_it() -> None:
    budget = ReferrersBudget(100 * MiB)
    pages = SharedPages(budget)
    reads = 0
    answer = asyncio.Event()

    async def read(lease: Lease) -> ReferrersPage:
        nonlocal reads
        reads += 1
        await lease.take(CALL_BYTES)
        await answer.wait()
        lease.keep(3 * MiB)
        return ReferrersPage([Referrer(None, b"{}")])

    readers = [asyncio.create_task(pages.page("key", "addr:a", read)) for _ in range(3)]
    await asyncio.sleep(0.01)
    readers[2].cancel()  # a client gone before the page came
    answer.set()
    first, second = await readers[0], await readers[1]
    assert reads == 1 and budget.held == 3 * MiB
    first.release()
    first.release()  # once per reader, however often
    assert budget.held == 3 * MiB
    second.release()
    assert budget.held == 0


async def test_a_failed_read_gives_its_room_back() -> None:
    budget = ReferrersBudget(100 * MiB)

    async def read(lease: Lease) -> ReferrersPage:
        await lease.take(CALL_BYTES)
        raise OciError(UNAVAILABLE)

    with pytest.raises(OciError):
        await SharedPages(budget).page("key", "addr:a", read)
    assert budget.held == 0


async def test_a_page_without_room_for_its_next_call_ends_there() -> None:
    """The rest follows from its cursor: every referrer once, whatever the budget held."""
    listing = [Descriptor("application/vnd.oci.image.manifest.v1+json", f"sha256:{n:064x}", 1)
               for n in range(3 * PER_CALL)]

    async def fetch(token: str | None) -> tuple[list[Descriptor], str | None]:
        start = int(token[1:]) if token else 0
        end = start + PER_CALL
        return listing[start:end], (f"t{end}" if end < len(listing) else None)

    budget = ReferrersBudget(CALL_BYTES + MiB)
    await budget.take("addr:other", MiB)  # someone else's: room for one call, not two
    seen: list[Referrer] = []
    cursor: str | None = None
    pages = 0
    while True:
        lease = Lease(budget, "addr:a")
        page = await read_page(fetch, cursor, lease)
        pages += 1
        seen += page.referrers
        lease.release()
        if page.next is None:
            break
        cursor = page.next
    assert seen == [Referrer.of(d) for d in listing]
    assert pages == 3
    assert budget.held == MiB
