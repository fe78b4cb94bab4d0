"""Freed heap memory given back to the system once uploads go idle.

An upload's parts arrive as socket reads of up to 1 MiB, each a new object in the event
loop thread's heap, and dozens of uploads interleave them. Once they are freed, glibc keeps
the memory: its automatic trim only cuts free space off the heap's top, and a few live
objects above it hold the rest (measured: 449 MiB of a 533 MiB RSS after 32 concurrent
256 MiB uploads, 24 MiB after three 512 MiB pushes, all of it free). ``malloc_trim`` gives
back free pages wherever they are. It runs once no upload has held part bytes for
``IDLE_SECONDS``: while uploads run, the heap's free pages are reused at once, and handing
them back would only fault them in again (the emulator's lesson, ``ecr_emulator/memory.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterator

from ecr_model import malloc

log = logging.getLogger(__name__)

IDLE_SECONDS = 1.0
_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's RSS (``/proc/self/statm``; 0 where there is none)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class IdleTrim:
    """Counts the uploads holding part bytes; ``IDLE_SECONDS`` after the last one ends (and
    none started since), trims the heap in a worker thread."""

    def __init__(self, delay: float = IDLE_SECONDS,
                 trim: Callable[[], bool] = malloc.trim) -> None:
        self._delay = delay
        self._trim = trim
        self._active = 0
        self._timer: asyncio.TimerHandle | None = None
        self._trimming: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Around a request that reads or sends an upload's bytes."""
        self._active += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0:
                self._timer = asyncio.get_running_loop().call_later(self._delay, self._idle)

    def _idle(self) -> None:
        self._timer = None
        if self._active == 0 and self._trimming is None:
            self._trimming = asyncio.ensure_future(self._release())

    async def _release(self) -> None:
        try:
            before = resident_bytes()
            released = await asyncio.to_thread(self._trim)
            after = resident_bytes()
            log.debug("uploads idle: freed heap memory %s (RSS %d MiB, now %d MiB)",
                      "given back" if released else "not given back (none, or no glibc)",
                      before >> 20, after >> 20)
        finally:
            self._trimming = None
