"""A total for the referrers answers this process reads and holds at once.

One read of a referrers page is bounded (about 16 MiB of referrers, gateway/ecr/referrers.py)
and readers of the same page at once share it, but every other page (another subject's,
another cursor's) is a read of its own: 20 pages asked at once by an attacker (anyone, where
pulls are anonymous) were 20 times that, and slow readers kept them. So a read takes room in
``limits.max_referrers_bytes`` before each ECR call, for the most the call's answer can be,
keeps room for what its page holds (the referrers encoded, as sent), and gives it back when
the last reader sharing the page has sent it.

Without room a read waits up to ``WAIT_SECONDS`` for some to be given back (a burst of
readers is served in turn: each call holds its room for milliseconds, and one client
reading the referrers of 24 images at once, a policy engine or a node checking signatures,
is answered whole). One client (user, else address) holds at most a quarter of the total,
so that it cannot hold the whole of it from the others: past the wait, a client still
holding its quarter gets ``429 TOOMANYREQUESTS`` (as zot answers a client over its rate),
its own excess; any other read ``503 UNAVAILABLE`` with Retry-After (as distribution answers
at capacity), the registry being busy rather than the client wrong. A waiting read holds no
room. A read past its first call that finds no room ends its page where it is: the client
follows the ``Link`` to the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass, replace
from typing import Any

from gateway.observability.logs import Sparing, unsaid
from gateway.observability.metrics import REFERRERS_REFUSALS, SHARED_CALLS
from gateway.oci.backend import ReferrersPage
from gateway.oci.errors import TOOMANYREQUESTS, UNAVAILABLE, OciError
from gateway.oci.limits import CLIENT_SHARE, Holdings

log = logging.getLogger(__name__)

WAIT_SECONDS = 10.0  # for room, before a 503
_FULL = Sparing()  # a full budget is said once a minute (the metric counts every refusal)


class ReferrersBudget:
    """Bytes held by referrers reads and the pages they answered, in this process; 0: no
    bound (still counted)."""

    def __init__(self, limit: int, wait: float = WAIT_SECONDS) -> None:
        self.limit = limit
        self._wait = wait
        self._held = Holdings()

    @property
    def held(self) -> int:
        return self._held.total

    def _fits(self, client: str | None, amount: int) -> bool:
        # Room always admits one read alone, however small the bound.
        return not self.limit or self.held == 0 or self.held + amount <= self.limit

    def _client_fits(self, client: str | None, amount: int) -> bool:
        holds = self._held.of(client)
        return (not self.limit or client is None or holds == 0
                or holds + amount <= self.limit // CLIENT_SHARE)

    def try_take(self, client: str | None, amount: int) -> bool:
        if not (self._fits(client, amount) and self._client_fits(client, amount)):
            return False
        self.add(client, amount)
        return True

    async def take(self, client: str | None, amount: int) -> None:
        """Room for ``amount`` more: at once, or after a wait for some to be given back, or
        refused when none came in time (429: ``client`` still holds its share; 503: the
        total is full)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        while not self.try_take(client, amount):
            if not await self._held.freed(deadline - loop.time()):
                if not self._client_fits(client, amount):
                    raise self._refused(
                        "client", TOOMANYREQUESTS,
                        "this client's referrers answers take their share already")
                raise self._refused("total", UNAVAILABLE,
                                    "referrers answers take their memory already")

    def give(self, client: str | None, amount: int) -> None:
        self.add(client, -amount)

    def add(self, client: str | None, amount: int) -> None:
        """Count ``amount`` more (fewer, negative: room given back), room or not: bytes
        already held."""
        self._held.add(client, amount)

    def _refused(self, bound: str, error: Any, message: str) -> OciError:
        REFERRERS_REFUSALS.labels(bound).inc()
        count = _FULL.due(bound)
        if count is not None:
            log.warning("referrers read refused: %s (limits.max_referrers_bytes %d, held %d)%s",
                        message, self.limit, self.held, unsaid(count))
        return OciError(error, {"limit": self.limit}, message=message,
                        headers={"Retry-After": "1"})


class Lease:
    """What one read, then the page it answered, holds of the budget."""

    def __init__(self, budget: ReferrersBudget, client: str | None) -> None:
        self._budget = budget
        self._client = client
        self.held = 0

    async def take(self, amount: int) -> None:
        await self._budget.take(self._client, amount)
        self.held += amount

    def try_take(self, amount: int) -> bool:
        if not self._budget.try_take(self._client, amount):
            return False
        self.held += amount
        return True

    def keep(self, amount: int) -> None:
        """Hold ``amount`` from now on (what the page keeps), the rest given back."""
        if amount > self.held:  # referrers larger than a call was thought to answer
            self._budget.add(self._client, amount - self.held)
        elif amount < self.held:
            self._budget.give(self._client, self.held - amount)
        self.held = amount

    def release(self) -> None:
        self.keep(0)


@dataclass
class _Read:
    task: asyncio.Task[ReferrersPage]
    lease: Lease
    holders: int = 0


class SharedPages:
    """Readers of one page at once share one read of it (however the client spelled its
    cursor: the key is the decoded one), and the page's room in the budget is given back
    once the last of them has sent it: :attr:`ReferrersPage.release` of each."""

    def __init__(self, budget: ReferrersBudget) -> None:
        self._budget = budget
        self._reads: dict[Hashable, _Read] = {}

    async def page(self, key: Hashable, client: str | None,
                   read: Callable[[Lease], Coroutine[Any, Any, ReferrersPage]]) -> ReferrersPage:
        """The page ``read`` reads, with the room it takes counted against ``client`` (the
        one who began it; readers who join it add nothing)."""
        shared = self._reads.get(key)
        if shared is None:
            lease = Lease(self._budget, client)
            shared = _Read(asyncio.create_task(read(lease)), lease)
            self._reads[key] = shared
            shared.task.add_done_callback(lambda done: self._finished(key, shared))
        else:
            SHARED_CALLS.labels("referrers").inc()
        shared.holders += 1
        try:
            page = await asyncio.shield(shared.task)
        except BaseException:
            self._let_go(shared)
            raise
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._let_go(shared)
        return replace(page, release=release)

    def _finished(self, key: Hashable, shared: _Read) -> None:
        if self._reads.get(key) is shared:
            del self._reads[key]
        failed = shared.task.cancelled() or shared.task.exception() is not None
        if failed or shared.holders == 0:  # nobody is left to send it
            shared.lease.release()

    def _let_go(self, shared: _Read) -> None:
        shared.holders -= 1
        if shared.holders == 0 and shared.task.done():
            shared.lease.release()
