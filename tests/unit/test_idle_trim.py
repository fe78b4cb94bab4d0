"""IdleTrim: the heap is trimmed once, a delay after the last upload holding part bytes
ended, never while one runs (its freed pages are reused at once there)."""

from __future__ import annotations

import asyncio

from gateway.ecr.idle_trim import IdleTrim, resident_bytes

DELAY = 0.2


async def _until(calls: list[int], count: int, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if len(calls) >= count:
            return
        await asyncio.sleep(0.01)


async def test_trimmed_once_after_the_last_upload_and_never_while_one_runs() -> None:
    calls: list[int] = []

    def trim() -> bool:
        calls.append(1)
        return True

    idle = IdleTrim(delay=DELAY, trim=trim)
    with idle.busy():
        with idle.busy():
            pass
        await asyncio.sleep(2 * DELAY)
        assert calls == []  # the other upload still runs
    with idle.busy():  # began before the delay was over: no trim under it
        await asyncio.sleep(2 * DELAY)
        assert calls == []
    await _until(calls, 1)
    assert calls == [1]
    await asyncio.sleep(2 * DELAY)
    assert calls == [1]  # once per idle period


async def test_a_trim_that_releases_nothing_is_not_an_error() -> None:
    calls: list[int] = []

    def trim() -> bool:
        calls.append(1)
        return False  # no glibc, or nothing free

    idle = IdleTrim(delay=0.0, trim=trim)
    with idle.busy():
        pass
    await _until(calls, 1)
    assert calls == [1]


def test_resident_bytes_is_this_process_rss() -> None:
    assert resident_bytes() > 1024 * 1024
