"""Waiting for something a process does on its own schedule (a sweep, an expiry)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(done: Callable[[], bool], seconds: float, step: float = 0.2) -> bool:
    """Whether ``done()`` became true within ``seconds``, asked every ``step``."""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step)
    return True
