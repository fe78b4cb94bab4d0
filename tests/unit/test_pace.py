"""The blob bodies' rate floor: one timer per body, cut off only when the average since
the start falls below the rate after the grace (a pause a body has got ahead for is fine)."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.pullthrough.pace import RateFloor


async def test_a_body_ahead_of_the_floor_may_pause_and_one_behind_it_is_cut_off() -> None:
    cut: list[RateFloor] = []
    floor = RateFloor(0.2, 10_000, cut.append)
    floor.received = 5_000  # half a second's worth at the floor: due at 0.7 s
    await asyncio.sleep(0.5)
    assert cut == []
    await asyncio.sleep(0.4)
    assert cut == [floor] and floor.broken
    floor.end()


async def test_the_timer_is_set_again_only_when_it_fires() -> None:
    calls = 0
    loop = asyncio.get_running_loop()
    call_at = loop.call_at

    def counted(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        nonlocal calls
        calls += getattr(callback, "__self__", None).__class__ is RateFloor
        return call_at(when, callback, *args, **kwargs)

    loop.call_at = counted  # type: ignore[method-assign]
    try:
        floor = RateFloor(0.05, 1_000_000, lambda _: None)
        for _ in range(1000):  # a fast body: pieces added far ahead of the floor
            floor.received += 64 * 1024
        await asyncio.sleep(0.1)  # the grace ends: set once more, 65 s further on
        floor.end()
    finally:
        del loop.call_at
    assert calls == 2 and not floor.broken
