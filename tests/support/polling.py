"""Waiting for something a process does on its own schedule (a sweep, an expiry)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def until(done: Callable[[], bool | Awaitable[bool]], seconds: float,
                step: float = 0.2) -> bool:
    """Whether ``done()`` (a check, or a coroutine asking a process) became true within
    ``seconds``, asked every ``step``."""
    deadline = time.monotonic() + seconds
    while not await _answer(done()):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step)
    return True


async def _answer(result: bool | Awaitable[bool]) -> bool:
    return await result if inspect.isawaitable(result) else result
