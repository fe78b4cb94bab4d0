"""gateway/ecr/listings.py: kept listings, their edits, their bounds."""

from __future__ import annotations

import asyncio

from gateway.ecr.listings import ITEM_OVERHEAD, Listings


class Source:
    """A listing read: counts reads; ``gate`` holds a read until the test lets it finish."""

    def __init__(self, items: list[str]) -> None:
        self.items = items
        self.reads = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> list[str]:
        self.reads += 1
        snapshot = list(self.items)
        if self.gate is not None:
            await self.gate.wait()
        return snapshot


async def test_one_read_per_ttl_and_shared_by_concurrent_callers() -> None:
    listings = Listings(ttl_seconds=60, max_bytes=1 << 20)
    source = Source(["b", "a", "c", "a"])
    answers = await asyncio.gather(*(listings.get("k", source) for _ in range(5)))
    assert all(answer == ["a", "b", "c"] for answer in answers)
    assert await listings.get("k", source) == ["a", "b", "c"]
    assert source.reads == 1


async def test_expired_listing_is_read_again() -> None:
    listings = Listings(ttl_seconds=0.05, max_bytes=1 << 20)
    source = Source(["a"])
    await listings.get("k", source)
    source.items.append("b")
    await asyncio.sleep(0.06)
    assert await listings.get("k", source) == ["a", "b"]
    assert source.reads == 2


async def test_edits_apply_to_the_kept_list_and_to_a_read_in_flight() -> None:
    listings = Listings(ttl_seconds=60, max_bytes=1 << 20)
    kept = await listings.get("k", Source(["a", "c"]))
    listings.add("k", "b")
    listings.add("k", "b")
    listings.remove("k", "c")
    assert await listings.get("k", Source([])) == ["a", "b"]
    assert kept == ["a", "c"]  # a page being cut from the old list is not changed under it

    source = Source(["x", "y"])  # read before "z" was pushed and "x" deleted
    source.gate = asyncio.Event()
    reading = asyncio.create_task(listings.get("other", source))
    await asyncio.sleep(0)
    listings.add("other", "z")
    listings.remove("other", "x")
    source.gate.set()
    assert await reading == ["y", "z"]
    assert await listings.get("other", source) == ["y", "z"]
    assert source.reads == 1


async def test_forget_during_a_read_keeps_nothing() -> None:
    listings = Listings(ttl_seconds=60, max_bytes=1 << 20)
    source = Source(["a"])
    source.gate = asyncio.Event()
    reading = asyncio.create_task(listings.get("k", source))
    await asyncio.sleep(0)
    listings.forget("k")
    source.gate.set()
    assert await reading == ["a"]
    await listings.get("k", source)
    assert source.reads == 2


async def test_bounded_by_bytes_and_entries() -> None:
    one = 10 + ITEM_OVERHEAD
    listings = Listings(ttl_seconds=60, max_bytes=3 * one, max_entries=2)
    for key in ("a", "b", "c"):
        await listings.get(key, Source([key * 10]))
    assert len(listings) == 2 and listings.keys() == ["b", "c"]  # least recently read went
    big = Source([str(i).rjust(10) for i in range(4)])  # larger than the whole budget
    await listings.get("big", big)
    await listings.get("big", big)
    assert big.reads == 2 and "big" not in listings.keys()
    assert listings.bytes <= 3 * one


async def test_catalogs_forgotten_when_a_repository_is_created() -> None:
    listings = Listings(ttl_seconds=60, max_bytes=1 << 20)
    await listings.get(("catalog", None), Source(["r1"]))
    await listings.get(("tags", ("id", "region", "r1")), Source(["v1"]))
    listings.forget_catalogs()
    assert listings.keys() == [("tags", ("id", "region", "r1"))]
    listings.forget_tags(("id", "region", "r1"))
    assert listings.keys() == []


async def test_ttl_zero_keeps_nothing() -> None:
    listings = Listings(ttl_seconds=0, max_bytes=1 << 20)
    source = Source(["a"])
    await listings.get("k", source)
    await listings.get("k", source)
    assert source.reads == 2 and len(listings) == 0


async def test_forget_all_drops_every_listing_and_the_reads_in_flight() -> None:
    """Notices may have been missed: nothing kept is trusted, nor a read that started
    before (its answer is returned but not kept)."""
    listings = Listings(ttl_seconds=60, max_bytes=1 << 20)
    await listings.get(("catalog", None), Source(["r1"]))
    await listings.get(("tags", ("id", "region", "r1")), Source(["v1"]))
    slow = Source(["old"])
    slow.gate = asyncio.Event()
    reading = asyncio.create_task(listings.get(("tags", ("id", "region", "r2")), slow))
    await asyncio.sleep(0)
    listings.forget_all()
    assert listings.keys() == [] and listings.bytes == 0
    slow.gate.set()
    assert await reading == ["old"]
    assert listings.keys() == []
