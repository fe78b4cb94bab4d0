"""Turns for one upstream's blob transfers in this process: at most its
``max_blob_transfers`` at once. A transfer beyond waits a few seconds for a turn, then is
refused (its client gets a 503 with Retry-After and asks again): each transfer holds a
connection, a spool file and two spooling threads, and an upstream that sends headers and
then nothing would otherwise hold as many as clients ask it for blobs. At most as many wait
as may run: each waiter holds a client's socket and a task, so the ones beyond are refused
at once."""

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
        self._waiting = 0

    async def take(self) -> bool:
        """A turn, within the wait (False: none came free, or ``limit`` wait already)."""
        if self._turns.locked() and self._waiting >= self.limit:
            return False
        self._waiting += 1
        try:
            async with asyncio.timeout(self._wait):
                await self._turns.acquire()
        except TimeoutError:
            return False
        finally:
            self._waiting -= 1
        return True

    def give_back(self) -> None:
        self._turns.release()
