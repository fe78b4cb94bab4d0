"""Turns for one upstream's blob transfers in this process: at most its
``max_blob_transfers`` at once. A transfer beyond waits a few seconds for a turn, then is
refused (its client gets a 503 with Retry-After and asks again): each transfer holds a
connection, a spool file and two spooling threads, and an upstream that sends headers and
then nothing would otherwise hold as many as clients ask it for blobs."""

from __future__ import annotations

import asyncio

# How long a transfer waits for a turn before it is refused: a burst (the layers of an
# image many nodes pull at once) is smoothed, a flood is not queued.
WAIT_SECONDS = 5.0


class Transfers:
    def __init__(self, limit: int, wait: float = WAIT_SECONDS) -> None:
        self.limit = limit
        self._wait = wait
        self._turns = asyncio.Semaphore(limit)

    async def take(self) -> bool:
        """A turn, within the wait (False: none came free)."""
        try:
            async with asyncio.timeout(self._wait):
                await self._turns.acquire()
        except TimeoutError:
            return False
        return True

    def give_back(self) -> None:
        self._turns.release()
