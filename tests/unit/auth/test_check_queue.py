"""Password checks waiting for threads: bounded lanes, the known pairs' lane served first and
never filled by the others, first come first served within a lane; and Logins answering a
full lane with 429 at once, counting no failure for it. Checks run on real threads, each
held until the test lets it end."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from gateway.auth.check_queue import KNOWN, UNKNOWN, CheckQueue, Place, QueueFull
from gateway.auth.logins import Login, Logins
from gateway.auth.ratelimit import FailedLogins
from gateway.auth.tokens import RefreshClaims
from gateway.oci.errors import OciError

PASSWORD = "the right one"


class Gate:
    """Checks that each wait on the pool's thread until :meth:`open`, recording their order."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self._open = threading.Event()

    def check(self, label: str) -> str:
        self.ran.append(label)
        assert self._open.wait(10)
        return label

    def open(self) -> None:
        self._open.set()


async def _started(queue: CheckQueue, gate: Gate, label: str, known: bool = False,
                   name: str = "") -> asyncio.Future[str]:
    place = queue.enter(known, name or label)
    run = asyncio.ensure_future(place.run(gate.check, label))
    await asyncio.sleep(0)
    return run


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within the time")


async def test_known_pairs_go_first_and_each_lane_in_order() -> None:
    queue, gate = CheckQueue(max_waiting=8, threads=1), Gate()
    runs = [await _started(queue, gate, "first")]
    await _until(lambda: gate.ran == ["first"])
    runs += [await _started(queue, gate, f"guess-{i}") for i in range(3)]
    runs += [await _started(queue, gate, "owner", known=True),
             await _started(queue, gate, "owner-2", known=True)]
    assert (queue.waiting(UNKNOWN), queue.waiting(KNOWN)) == (3, 2)
    gate.open()
    assert await asyncio.gather(*runs) == ["first", "guess-0", "guess-1", "guess-2", "owner",
                                           "owner-2"]
    assert gate.ran == ["first", "owner", "owner-2", "guess-0", "guess-1", "guess-2"]
    assert (queue.waiting(UNKNOWN), queue.waiting(KNOWN)) == (0, 0)


async def test_one_name_holds_at_most_a_quarter_of_the_known_lane() -> None:
    """An account holder logged in from many addresses sends its own name's wrong passwords,
    one from each: all were known pairs', so they filled the known lane (16 places by
    default) and every other owner's login was refused or waited behind them. Past its
    share (a quarter of the lane) a name's checks wait as strangers'."""
    queue, gate = CheckQueue(max_waiting=16, threads=1), Gate()
    assert (queue.rooms[KNOWN], queue.per_name) == (4, 1)
    runs = [await _started(queue, gate, "first")]
    await _until(lambda: gate.ran == ["first"])
    runs.append(await _started(queue, gate, "guess"))
    runs += [await _started(queue, gate, f"holder-{i}", known=True, name="holder")
             for i in range(6)]
    assert (queue.waiting(KNOWN), queue.waiting(UNKNOWN)) == (1, 6)
    runs.append(await _started(queue, gate, "owner", known=True))  # still room for it
    promoted = queue.enter(known=False, name="holder")
    runs.append(asyncio.ensure_future(promoted.run(gate.check, "holder-promoted")))
    promoted.promote()  # nor does a promotion pass the share
    assert (queue.waiting(KNOWN), queue.waiting(UNKNOWN)) == (2, 7)
    gate.open()
    await asyncio.gather(*runs)
    assert gate.ran[:4] == ["first", "holder-0", "owner", "guess"]
    assert (queue.waiting(KNOWN), queue.waiting(UNKNOWN)) == (0, 0)
    # Its places gone, the name has its share again.
    again = queue.enter(known=True, name="holder")
    assert again.lane == KNOWN
    again.leave()


async def test_a_full_lane_refuses_at_once_and_the_known_lane_keeps_its_room() -> None:
    queue, gate = CheckQueue(max_waiting=4, threads=1), Gate()
    runs = [await _started(queue, gate, f"guess-{i}") for i in range(5)]  # 1 runs, 4 wait
    with pytest.raises(QueueFull) as refused:
        queue.enter(known=False)
    assert refused.value.lane == UNKNOWN and 1 <= refused.value.retry_after <= 10
    assert queue.rooms == {KNOWN: 1, UNKNOWN: 4}
    runs.append(await _started(queue, gate, "owner", known=True))  # its own room
    with pytest.raises(QueueFull):
        queue.enter(known=True)
    gate.open()
    await asyncio.gather(*runs)
    assert gate.ran[:2] == ["guess-0", "owner"]
    queue.enter(known=False).leave()  # room again


async def test_no_waiting_room_admits_only_a_free_thread() -> None:
    queue, gate = CheckQueue(max_waiting=0, threads=2), Gate()
    runs = [await _started(queue, gate, "a"), await _started(queue, gate, "b")]
    with pytest.raises(QueueFull):
        queue.enter(known=False)
    waiting_owner = await _started(queue, gate, "owner", known=True)  # at least one
    gate.open()
    assert await asyncio.gather(*runs, waiting_owner) == ["a", "b", "owner"]


async def test_places_left_or_cancelled_give_their_room_and_thread_back() -> None:
    queue, gate = CheckQueue(max_waiting=2, threads=1), Gate()
    idle = queue.enter(known=False)  # given the thread at once, its check not yet ready
    waiting = queue.enter(known=False)
    cancelled = asyncio.ensure_future(queue.enter(known=False).run(gate.check, "cancelled"))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        queue.enter(known=False)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert queue.waiting(UNKNOWN) == 1
    run = asyncio.ensure_future(waiting.run(gate.check, "waiting"))
    idle.leave()  # e.g. refused by the replicas' count: the thread passes on
    idle.leave()  # once is enough
    await _until(lambda: gate.ran == ["waiting"])
    gate.open()
    assert await run == "waiting"
    assert "cancelled" not in gate.ran


async def test_a_place_promoted_goes_ahead_of_the_strangers() -> None:
    queue, gate = CheckQueue(max_waiting=8, threads=1), Gate()
    runs = [await _started(queue, gate, "first")]
    await _until(lambda: gate.ran == ["first"])
    runs.append(await _started(queue, gate, "guess"))
    shared = queue.enter(known=False)
    runs.append(asyncio.ensure_future(shared.run(gate.check, "shared")))
    shared.promote()
    assert (queue.waiting(UNKNOWN), queue.waiting(KNOWN)) == (1, 1)
    gate.open()
    await asyncio.gather(*runs)
    assert gate.ran == ["first", "shared", "guess"]


class QueuedBackend:
    """htpasswd's way: a place first, then the check on the queue's thread."""

    offers_refresh_tokens = False

    def __init__(self, queue: CheckQueue, gate: Gate) -> None:
        self.queue = queue
        self.gate = gate

    def admit(self, user: str, password: str, known: bool) -> Place | None:
        return self.queue.enter(known)

    async def check(self, user: str, password: str,
                    place: Place | None = None) -> Login | None:
        assert place is not None
        await place.run(self.gate.check, f"{user}:{password}")
        return Login(user) if password == PASSWORD else None

    def still_valid(self, claims: RefreshClaims) -> Login | None:
        return None

    def still_holds(self, subject: str, fingerprint: str | None) -> bool:
        return True


async def test_logins_refuse_a_full_lane_with_429_and_count_no_failure() -> None:
    queue, gate = CheckQueue(max_waiting=3, threads=1), Gate()
    failures = FailedLogins(300, per_user=10, per_address=50)
    logins = Logins(QueuedBackend(queue, gate), failures)
    failures.succeeded("owner", "192.0.2.1")  # logged in from there before
    guesses = [asyncio.ensure_future(logins.check(f"name-{i}", "guess", f"198.51.100.{i}"))
               for i in range(10)]
    await asyncio.sleep(0.05)
    refused = [g.exception() for g in guesses if g.done()]
    assert len(refused) == 6  # one runs, three wait
    assert all(isinstance(e, OciError) and e.status == 429 and e.error.code == "TOOMANYREQUESTS"
               and 1 <= int(e.headers["Retry-After"]) <= 10 for e in refused)
    assert failures.retry_after("name-9", "198.51.100.9") is None  # no failure counted
    # The owner, from where it logged in, goes ahead of the three waiting (twice at once:
    # one check).
    owner = [asyncio.ensure_future(logins.check("owner", PASSWORD + "!", "192.0.2.1"))
             for _ in range(2)]
    await asyncio.sleep(0.05)
    assert not any(o.done() for o in owner)
    gate.open()
    assert await asyncio.gather(*owner) == [None, None]
    assert gate.ran.index("owner:the right one!") == 1  # after the guess running then
    assert gate.ran.count("owner:the right one!") == 1
    await asyncio.gather(*(g for g in guesses if not g.done()))
