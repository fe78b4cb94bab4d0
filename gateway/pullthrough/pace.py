"""A floor under the average rate of a blob's body from an upstream registry.

The read timeout alone lets an upstream that sends a byte just inside each timeout hold a
transfer for ever: the pull-through's fill, its share of the spool budget and the clients
following it, or a sync. After a grace period, the bytes received must keep up with
``min_rate`` bytes a second counted from the body's start, or the transfer is cut off.

One timer per body, not per piece (the cold pull's hot path only adds to ``received``): it
is set for the moment the bytes received so far stop being enough (start + grace +
received / min_rate) and, when it fires with more bytes in, set again further on. A fast
upstream's timer thus fires rarely, if ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# An upstream's blob body: what it must keep up with after the grace (as the emulator asks
# of request bodies).
GRACE_SECONDS = 20.0
MIN_RATE = 64 * 1024


class RateFloor:
    """Started when created (on the event loop); ``cut_off`` is called once, on the loop,
    when the floor is broken, and ``end`` ends it."""

    def __init__(self, grace: float, min_rate: float,
                 cut_off: Callable[[RateFloor], None]) -> None:
        self.received = 0  # the reader adds each piece's length
        self.broken = False
        self.grace = grace
        self.min_rate = min_rate
        self._cut_off = cut_off
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        if min_rate > 0:  # 0: no floor
            self._timer = self._loop.call_at(self._started + grace, self._check)

    @property
    def elapsed(self) -> float:
        return self._loop.time() - self._started

    def _check(self) -> None:
        due = self._started + self.grace + self.received / self.min_rate
        if due > self._loop.time():
            self._timer = self._loop.call_at(due, self._check)
            return
        self._timer = None
        self.broken = True
        self._cut_off(self)

    def end(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
