"""Password checks waiting for the threads that run them: two lanes, each with a bound.

A bcrypt check takes a CPU for 50 to 250 ms (htpasswd costs 10 to 12), on at most half the
cores (gateway/auth/htpasswd.py). ``auth.rate_limit`` bounds each name and each address, but
a guesser holding many addresses (or sending many names) could queue checks as fast as it
connected: the pool's queue grew without end, and an owner's ``docker login`` waited behind
every guess queued before it.

So a check waits here, never in the pool's queue, and only up to a bound: past it a new
check is refused at once (:class:`QueueFull`, a 429 with a short Retry-After). A check of a
name from an address where that name logged in before (``known``, gateway/auth/ratelimit.py)
waits in a lane of its own, served first, with a room of its own (a quarter of the other's)
that strangers' checks cannot fill: such an owner waits for the checks already running and
for other owners' ahead of it, not for the flood. Within a lane, first come first served.
The rooms count the checks waiting, not those running (one a thread). One name holds at most
a quarter of the known lane (at least one place): an account holder who logged in from many
addresses could otherwise fill it with its own name's wrong passwords, one from each, and
hold every other owner's login behind them; its checks past that share wait as strangers'.

A place is taken before anything else is done for the check (the shared count in Redis):
a check refused here costs nothing more. Its turn comes in the order places were taken; a
place given a turn before its check is ready keeps the thread for it until it runs or
leaves.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from gateway.observability.metrics import PASSWORD_CHECKS_WAITING

T = TypeVar("T")

KNOWN, UNKNOWN = "known", "unknown"
# Checks waiting per thread when auth.max_waiting_password_checks is not set: at cost 12
# (a quarter of a second each), 16 s of waiting at most, within clients' timeouts.
WAITING_PER_THREAD = 64
# What a check is taken to last until the first ones were timed (the Retry-After's guess).
FIRST_GUESS_SECONDS = 0.25
MAX_RETRY_AFTER = 10  # seconds: a lane drains quickly, and a refused client retries


def default_threads() -> int:
    """Half the cores: the other half stay for uploads, hashing and the event loop."""
    return max(1, (os.cpu_count() or 2) // 2)


class QueueFull(Exception):
    """No room for one more check in ``lane``."""

    def __init__(self, lane: str, room: int, threads: int, retry_after: int) -> None:
        super().__init__(f"{room} {lane} password checks wait already")
        self.lane = lane
        self.room = room
        self.threads = threads
        self.retry_after = retry_after


class CheckQueue:
    """``max_waiting`` checks of unknown (name, address) pairs may wait (None: 64 a thread),
    and a quarter of it more (at least one) of known pairs, for ``threads`` threads."""

    def __init__(self, max_waiting: int | None = None, threads: int | None = None) -> None:
        self.threads = threads or default_threads()
        unknown = WAITING_PER_THREAD * self.threads if max_waiting is None else max_waiting
        self.rooms = {KNOWN: max(1, math.ceil(unknown / 4)), UNKNOWN: unknown}
        self.per_name = max(1, math.ceil(self.rooms[KNOWN] / 4))
        self._names: Counter[str] = Counter()  # places in the known lane, by name
        self._pool = ThreadPoolExecutor(max_workers=self.threads,
                                        thread_name_prefix="password-check")
        self._lanes: dict[str, deque[Place]] = {KNOWN: deque(), UNKNOWN: deque()}
        self._running = 0  # places given a thread (their check running or about to)
        self._seconds = FIRST_GUESS_SECONDS  # a check's recent duration

    def waiting(self, lane: str) -> int:
        return len(self._lanes[lane])

    def enter(self, known: bool, name: str = "") -> Place:
        """A place for one check of ``name``, in the known pairs' lane (while the name holds
        less than its share of it) or the others'; QueueFull when that lane's room is full
        (nothing is held then)."""
        lane = KNOWN if known and self._names[name] < self.per_name else UNKNOWN
        place = Place(self, lane, name)
        # The lanes are empty while a thread is free: one is given at once.
        if self._running < self.threads:
            self._give_turn(place)
            return place
        if len(self._lanes[lane]) >= self.rooms[lane]:
            raise QueueFull(lane, self.rooms[lane], self.threads, self._retry_after(lane))
        self._queued(place)
        return place

    def _queued(self, place: Place) -> None:
        self._lanes[place.lane].append(place)
        if place.lane == KNOWN:
            self._names[place.name] += 1
        self._counted()

    def _unqueued(self, place: Place) -> None:
        """Out of its lane (given a turn, gone, or moved)."""
        if place.lane == KNOWN:
            self._names[place.name] -= 1
            if self._names[place.name] <= 0:
                del self._names[place.name]

    def _retry_after(self, lane: str) -> int:
        """About when the lane's waiting checks will have run: a short wait, in seconds."""
        ahead = len(self._lanes[lane]) + (len(self._lanes[KNOWN]) if lane == UNKNOWN else 0)
        return min(MAX_RETRY_AFTER, max(1, math.ceil(ahead * self._seconds / self.threads)))

    def _give_turn(self, place: Place) -> None:
        place.state = TURN
        self._running += 1
        if not place.turn.done():  # cancelled: its run() is leaving, and gives it back
            place.turn.set_result(None)

    def _next(self) -> None:
        """Free threads to the waiting places: the known pairs' first."""
        while self._running < self.threads:
            lane = self._lanes[KNOWN] or self._lanes[UNKNOWN]
            if not lane:
                break
            place = lane.popleft()
            self._unqueued(place)
            self._give_turn(place)
        self._counted()

    def _ended(self, place: Place, seconds: float) -> None:
        place.state = DONE
        self._running -= 1
        self._seconds += (seconds - self._seconds) / 8
        self._next()

    def _counted(self) -> None:
        for lane, places in self._lanes.items():
            PASSWORD_CHECKS_WAITING.labels(lane).set(len(places))


WAITING, TURN, RUNNING, DONE = "waiting", "turn", "running", "done"


class Place:
    """One check's place in a :class:`CheckQueue`: :meth:`run` it, or :meth:`leave`."""

    def __init__(self, queue: CheckQueue, lane: str, name: str = "") -> None:
        self.lane = lane
        self.name = name
        self.state = WAITING
        self.turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue = queue

    async def run(self, check: Callable[..., T], *args: object) -> T:
        """``check(*args)`` on one of the queue's threads, once this place's turn came."""
        if self.state in (RUNNING, DONE):
            raise RuntimeError("a place runs one check")
        try:
            await self.turn
        except asyncio.CancelledError:
            self.leave()
            raise
        self.state = RUNNING
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        work = self._queue._pool.submit(check, *args)

        def ended(_: Future[T]) -> None:  # on the pool's thread; the thread is free now
            try:
                loop.call_soon_threadsafe(self._queue._ended, self,
                                          time.monotonic() - started)
            except RuntimeError:  # the loop closed: nothing waits any more
                pass

        work.add_done_callback(ended)
        # A caller that goes away leaves the check running: its thread stays counted
        # until the check ends.
        return await asyncio.wrap_future(work)

    def leave(self) -> None:
        """Give the place up unless its check runs or ran (once is enough; more is nothing)."""
        queue = self._queue
        if self.state == WAITING:
            queue._lanes[self.lane].remove(self)
            queue._unqueued(self)
            queue._counted()
        elif self.state == TURN:
            queue._running -= 1
            queue._next()
        else:
            return
        self.state = DONE

    def promote(self) -> None:
        """Into the known pairs' lane, if still waiting in the other one and there is room:
        the same credentials came from an address where their name logged in."""
        queue = self._queue
        if self.state != WAITING or self.lane != UNKNOWN or \
                len(queue._lanes[KNOWN]) >= queue.rooms[KNOWN] or \
                queue._names[self.name] >= queue.per_name:
            return
        queue._lanes[UNKNOWN].remove(self)
        self.lane = KNOWN
        queue._queued(self)
