"""A client's unfinished-upload bytes summed over the replicas that share Redis.

Each replica counts, in its own memory, the bytes ECR holds for a client's unfinished
uploads through it (gateway/ecr/unfinished.py, bounded by
``limits.max_abandoned_upload_bytes_per_client``). Behind a load balancer that spreads a
client's requests over N replicas, each replica saw a share and the client held N times the
bound: cycling POST, PATCH, DELETE over three replicas left three times what one allows in
ECR, where nothing cancels an upload.

So each replica writes its share of a client's count to
``<prefix>unfinished:{<client key>}`` (a hash of replica id to ``"<bytes> <Redis time, ms>"``)
and reads the others' sum back in the same script: before a client's request is let send or
start anything (:meth:`UnfinishedShares.refresh`), and whenever its count here changes (a
part sent, a reservation, an upload ended), at most every ``FLUSH_GAP`` seconds, every
client that changed at once. A share not written again within ``LIVE_SECONDS`` is
a stopped replica's, and dropped. What another replica admitted within that gap is not yet
seen: a client sending to several replicas at the same moment may pass the bound by what
they admit in that time, not by N times the bound.

When Redis is down (or refuses) each replica's own count applies alone: an upload is not
refused for want of Redis.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from typing import TYPE_CHECKING, Any

from gateway.state.connect import RedisConnection

if TYPE_CHECKING:  # the state layer stores counts; what they count is the uploads' own
    from gateway.ecr.unfinished import StillOpen, UnfinishedBytes

log = logging.getLogger(__name__)

# Shares are written at least this often while they are not zero (a client's ended bytes
# age out of the window without a request)...
EVERY_SECONDS = 1.0
# ...and no more often than this when counts change on every part.
FLUSH_GAP = 0.05
# A share older than this is a replica's that stopped (killed, cut off from Redis).
LIVE_SECONDS = 10.0
# Clients written at once (each a script call of its own).
BATCH = 16
# An open upload no request used here for this long may have been completed through another
# replica: the store is asked (each upload at most every OPEN_RETRY_SECONDS).
QUIET_SECONDS = 1.0

# KEYS: the client's hash. ARGV: this replica's id, its share (bytes), how long a share
# lives (ms). Returns the live others' sum; drops the stale.
_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local live = tonumber(ARGV[3])
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. now)
  redis.call('PEXPIRE', KEYS[1], live)
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local others = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  if entries[i] ~= ARGV[1] then
    local size, at = string.match(entries[i + 1], '^(%d+) (%d+)$')
    if size and tonumber(at) > now - live then
      others = others + tonumber(size)
    else
      redis.call('HDEL', KEYS[1], entries[i])
    end
  end
end
return others
"""


class UnfinishedShares:
    """Writes this replica's share of each client's unfinished bytes to Redis and keeps
    ``book.elsewhere`` (the others' sum) up to date."""

    def __init__(self, connection: RedisConnection, prefix: str, book: UnfinishedBytes,
                 still_open: StillOpen, *, every: float = EVERY_SECONDS,
                 gap: float = FLUSH_GAP) -> None:
        self._redis: Any = connection.client()
        self._health = connection.health
        self._prefix = prefix
        self._id = uuid.uuid4().hex
        self._book = book
        self._still_open = still_open
        self._confirmed = -math.inf  # when open uploads were last confirmed with the store
        self._renewed = -math.inf  # when every share not zero was last written again
        self._every = every
        self._gap = gap
        self._script = self._redis.register_script(_SCRIPT)
        self._written: set[str] = set()  # clients whose share in Redis is not zero
        self._wake = asyncio.Event()
        book.on_change(self._wake.set)

    def _key(self, owner: str) -> str:
        return f"{self._prefix}unfinished:{{{owner}}}"

    async def refresh(self, owner: str | None) -> None:
        """Write this replica's share of ``owner``'s bytes and read the others' now."""
        if owner is None or not self._book.limit:
            return
        if not self._health.up:
            self._book.elsewhere.pop(owner, None)
            return
        share = self._book.held_here(owner)
        try:
            others = await self._script(keys=[self._key(owner)],
                                        args=[self._id, share, int(LIVE_SECONDS * 1000)])
        except Exception as exc:  # Redis down or refusing: said by its health
            log.debug("unfinished bytes not shared: %s", exc)
            self._book.elsewhere.pop(owner, None)
            return
        self._noted(owner, share, int(others))

    async def run(self) -> None:
        """Write the shares that changed (and refresh the others) until cancelled."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._every)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                log.debug("unfinished bytes not shared: %s", exc)
                self._book.elsewhere.clear()
            await asyncio.sleep(self._gap)

    async def flush(self) -> None:
        """Write every client whose count here changed; and every ``every`` seconds each
        whose share in Redis is not zero (written again, so it stays live) or whose others'
        sum is (read again)."""
        book = self._book
        if not book.limit:
            return
        if not self._health.up:
            book.elsewhere.clear()
            return
        now = time.monotonic()
        if now - self._confirmed >= self._every:
            # An upload completed through another replica gave its bytes back there; this
            # replica's share would still count them (and every replica would refuse the
            # client for them) until its sweep, an idle timeout later.
            self._confirmed = now
            await book.recount(book.unconfirmed(quiet=QUIET_SECONDS), self._still_open)
        # Not on every round: one client sending part after part wakes this twenty times
        # a second, and each client holding bytes (as many as addresses send) would be a
        # script call each time, on every replica.
        owners = set(book.changed)
        if now - self._renewed >= self._every:
            self._renewed = now
            # And the others' sums kept here read again: a client that asked here once,
            # while it held bytes elsewhere, is forgotten once the others hold none.
            owners |= self._written | book.elsewhere.keys()
        # Each client's key is in a slot of its own (Redis Cluster): scripts asked at once,
        # a batch at a time, rather than one pipeline.
        ordered = sorted(owners)
        for start in range(0, len(ordered), BATCH):
            batch = ordered[start:start + BATCH]
            book.changed.difference_update(batch)
            shares = [book.held_here(owner) for owner in batch]
            try:
                answers = await asyncio.gather(*(
                    self._script(keys=[self._key(owner)],
                                 args=[self._id, share, int(LIVE_SECONDS * 1000)])
                    for owner, share in zip(batch, shares, strict=True)))
            except BaseException:
                book.changed.update(batch)  # written on the next round
                raise
            for owner, share, others in zip(batch, shares, answers, strict=True):
                self._noted(owner, share, int(others))

    def _noted(self, owner: str, share: int, others: int) -> None:
        # A write and a refresh of one client may end out of order: it stays renewed while
        # either the share written or the count here is not zero.
        if share > 0 or self._book.held_here(owner) > 0:
            self._written.add(owner)
        else:
            self._written.discard(owner)
        if others > 0:
            self._book.elsewhere[owner] = others
        else:
            self._book.elsewhere.pop(owner, None)

    async def close(self) -> None:
        """Take this replica's shares out (what a stopping replica counted is gone with it)."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for owner in self._written:
                    pipe.hdel(self._key(owner), self._id)
                await pipe.execute()
        except Exception as exc:
            log.debug("unfinished shares left to expire: %s", exc)
        await self._redis.aclose()
