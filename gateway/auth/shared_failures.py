"""Failed logins counted across the replicas that share Redis.

Each replica counts failed logins in its own memory (gateway/auth/ratelimit.py). Behind a
load balancer that spreads requests over N replicas, a guesser got N times
``auth.rate_limit``: 10 guesses per user name every 5 minutes became 30 with three
replicas, and each replica added tells it to guess faster. With ``state.backend: redis``
every check of a password is also counted in Redis before it runs, the same way the local
count does it (a check under way counts as a failure until it succeeded), so the limits hold
for the replicas together:

- ``<prefix>logins:user:{<digest of the name>}``: a sorted set of the name's checks within
  the window, ``<id>|<address key>`` scored by when they began (ms); a check that succeeds is
  taken out with every earlier failure of that name from its address;
- ``<prefix>logins:known:{<same digest>}``: the address keys the name logged in from, each
  with when that stops counting (a day after; the latest ``MAX_KNOWN``): there only that
  address's failures count, so failures sent from elsewhere do not lock the owner out where
  it logs in, on whichever replica (one whose own count refuses asks here first);
- ``<prefix>logins:from:{<same digest>}``: the same checks as ``<address key>|<ms>|<id>``
  (all scored 0, so in that order): an address's own are counted and found in a range, not
  by reading all the name's, which one holding its password and many addresses grows to
  thousands (up to the limit from each known address);
- ``<prefix>logins:address:{<digest of the address key>}``: the address's checks within the
  window.

A refused check adds nothing. Every key expires with its window (the known addresses a day
after the last login). The names and addresses are the callers' to choose: one holding many
IPv6 /64s, sending a new name from each, would add keys to Redis as fast as the gateway takes
requests (its password checks wait in line, counted already), until Redis, shared with every
push's upload sessions, was full. So at most ``MAX_RECORDED`` checks that Redis may still hold
are counted there (``<prefix>logins:recorded:{logins}:<window number>``, summed over the
windows a set may still hold, about 70 MB at most; a check that succeeded is taken out, and
gives its room back); past them, until the windows pass, each replica's own bounded count
applies alone, and a warning says so. A replica that dies during a check leaves it counted
as a failure, which the window ends. When Redis is down (or refuses), the local counts alone
apply: a login is not refused for want of Redis.

Each replica's own count then holds the limits divided among the live replicas (as the
replicas' settings hash last said, gateway/state/agreement.py; rounded up): filling the room
(or taking Redis down) must not hand a guesser spread over N replicas N times the limits.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

from gateway.auth.client_keys import ClientKeys
from gateway.auth.ratelimit import KNOWN_SECONDS, user_key
from gateway.observability.logs import Sparing, unsaid
from gateway.state.agreement import LiveReplicas
from gateway.state.connect import RedisConnection

log = logging.getLogger(__name__)
_SAID = Sparing()

MAX_RECORDED = 100_000
# The fixed windows whose checks a set may still hold (a set lives a window past its last
# check, which trims it to a window).
HELD_WINDOWS = 3
# Addresses a name keeps known (the latest logins'): one holding a password and many IPv6
# /64s would otherwise add one per login for a day, each login past a thousand reading all.
MAX_KNOWN = 1000

# KEYS: the checks' sorted set; for a name, also its known addresses and its checks by
# address. ARGV: "begin", "succeeded" or "forget", now (ms), window (ms), limit, member,
# address key ("": none), how long a login keeps its address known (ms), how many addresses
# a name keeps known. begin: the ms to wait if the checks counted reach the limit (nothing
# added), else -1 once the member is added. forget: the member out. succeeded: the member
# and the name's failures from the address out, the address known.
_SCRIPT = """
-- Redis's clock, not the replica's: a replica whose clock ran ahead would trim the others'
-- checks early (ARGV[2], the replica's, names only the window whose room a check takes).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local window, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local member, address = ARGV[5], ARGV[6]
local byname = #KEYS == 3
-- A name's checks are also indexed by address ("<address>|<ms>|<id>"): an address's own
-- are counted and found there, never by reading all the name's (one holding its password
-- and many addresses grew them to thousands, each check milliseconds of Redis's time).
local function indexed(item, at)
  local id, from = string.match(item, '^([^|]*)|(.*)$')
  return from .. '|' .. string.format('%013d', at) .. '|' .. id
end
local function drop(item)
  local at = redis.call('ZSCORE', KEYS[1], item)
  if at then
    redis.call('ZREM', KEYS[1], item)
    if byname then redis.call('ZREM', KEYS[3], indexed(item, tonumber(at))) end
  end
end
local cutoff = now - window
if byname then
  local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'WITHSCORES')
  for i = 1, #old, 2 do redis.call('ZREM', KEYS[3], indexed(old[i], tonumber(old[i + 1]))) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
local low, high = '[' .. address .. '|', '[' .. address .. '|\\255'
if ARGV[1] ~= 'begin' then
  drop(member)
  if ARGV[1] == 'succeeded' and address ~= '' and byname then
    for _, entry in ipairs(redis.call('ZRANGEBYLEX', KEYS[3], low, high)) do
      redis.call('ZREM', KEYS[3], entry)
      redis.call('ZREM', KEYS[1], string.match(entry, '|([^|]*)$') .. '|' .. address)
    end
    local keep = tonumber(ARGV[7])
    redis.call('HSET', KEYS[2], address, now + keep)
    local most = tonumber(ARGV[8])
    if redis.call('HLEN', KEYS[2]) > most then
      local known, kept = redis.call('HGETALL', KEYS[2]), {}
      for i = 1, #known, 2 do
        if tonumber(known[i + 1]) <= now then redis.call('HDEL', KEYS[2], known[i])
        else table.insert(kept, {tonumber(known[i + 1]), known[i]}) end
      end
      if #kept > most then
        table.sort(kept, function(x, y) return x[1] < y[1] end)
        for i = 1, #kept - most do redis.call('HDEL', KEYS[2], kept[i][2]) end
      end
    end
    redis.call('PEXPIRE', KEYS[2], keep)
  end
  return 0
end
local until_known = nil
if address ~= '' and byname then until_known = redis.call('HGET', KEYS[2], address) end
-- From an address the name logged in from, only that address's checks count.
local count, at
if until_known and tonumber(until_known) > now then
  count = redis.call('ZLEXCOUNT', KEYS[3], low, high)
  if count >= limit then
    local entry = redis.call('ZREVRANGEBYLEX', KEYS[3], high, low, 'LIMIT', limit - 1, 1)[1]
    at = tonumber(string.match(entry, '|(%d+)|[^|]*$'))
  end
else
  count = redis.call('ZCARD', KEYS[1])
  if count >= limit then
    at = tonumber(redis.call('ZRANGE', KEYS[1], -limit, -limit, 'WITHSCORES')[2])
  end
end
if count >= limit then return math.max(at + window - now, 1) end
redis.call('ZADD', KEYS[1], now, member)
redis.call('PEXPIRE', KEYS[1], window)
if byname then
  redis.call('ZADD', KEYS[3], 0, indexed(member, now))
  redis.call('PEXPIRE', KEYS[3], window)
end
return -1
"""

# A check that succeeded leaves its window's room (the count's key gone: nothing to do).
_GIVE_BACK = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECR', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Attempt:
    """One check of a password counted in Redis (give it to :meth:`succeeded` if it did)."""
    member: str
    user: str | None
    address: str | None
    counted: tuple[str, ...]  # the kinds counted: "user", "address"
    window: int = -1  # the window whose room it took (given back if it succeeds)


class SharedFailedLogins:
    """The replicas' failed logins in Redis, with ``auth.rate_limit``'s window and limits
    (0: no limit of that kind)."""

    def __init__(self, connection: RedisConnection, prefix: str, window: float,
                 per_user: int, per_address: int, keys: ClientKeys,
                 max_recorded: int = MAX_RECORDED, live: LiveReplicas | None = None) -> None:
        self._redis: Any = connection.client(decode_responses=True)
        self._health = connection.health
        self._script = self._redis.register_script(_SCRIPT)
        self._give_back = self._redis.register_script(_GIVE_BACK)
        self._prefix = prefix
        self._window_ms = max(int(window * 1000), 1)
        self._limits = {"user": per_user, "address": per_address}
        self._keys = keys
        self._max_recorded = max_recorded
        self._live = live if live is not None else LiveReplicas()
        # Whether the last check was counted here (not: Redis down, refusing or full).
        self._counting = True

    @property
    def share(self) -> int:
        """What each replica's own limits are divided by: 1 while Redis counts the checks,
        else the live replicas (each counting alone would let N times the limits through)."""
        return 1 if self._counting else max(1, self._live.count)

    def _sets(self, kind: str, value: str) -> list[str]:
        tag = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        if kind == "user":
            return [f"{self._prefix}logins:user:{{{tag}}}", f"{self._prefix}logins:known:{{{tag}}}",
                    f"{self._prefix}logins:from:{{{tag}}}"]
        return [f"{self._prefix}logins:address:{{{tag}}}"]

    async def begin(self, user: str | None, address: str | None) -> Attempt | int:
        """Count a check of ``user``'s password from ``address`` as a failure until it
        succeeds; or the seconds to wait when the replicas' failures reach a limit."""
        name, key = user_key(user), self._keys.of(address)
        # 64 random bits tell a name's checks apart; short, so that a set of them stays a
        # listpack in Redis (members up to 64 bytes), as small as it can be.
        attempt = Attempt(secrets.token_hex(8), name, key, ())
        if not self._health.up:
            self._counting = False
            return attempt  # the local counts alone: said once, when Redis went down
        now = int(time.time() * 1000)
        counted: list[str] = []
        try:
            self._counting = await self._room(now)
            if not self._counting:
                return attempt
            kinds = [(kind, value) for kind, value in (("user", name), ("address", key))
                     if value is not None and self._limits[kind] > 0]
            # The name's and the address's sets are apart (other slots): asked at once.
            waits = await asyncio.gather(*(self._script(
                keys=self._sets(kind, value),
                args=["begin", now, self._window_ms, self._limits[kind],
                      self._member(attempt), key or ""]) for kind, value in kinds))
            counted = [kind for (kind, _), wait in zip(kinds, waits, strict=True)
                       if int(wait) < 0]
            refused = [int(wait) for wait in waits if int(wait) >= 0]
            if refused:  # the name's wait first, as one after the other would say
                await self._take_back(attempt, counted)
                return max(1, math.ceil(refused[0] / 1000))
            if counted:
                await self._recorded(now)
                return Attempt(attempt.member, name, key, tuple(counted),
                               now // self._window_ms)
        except Exception as exc:  # Redis down or refusing: the local counts alone
            self._counting = False
            self._unshared(exc)
        return Attempt(attempt.member, name, key, tuple(counted))

    def _recorded_key(self, window: int) -> str:
        return f"{self._prefix}logins:recorded:{{logins}}:{window}"

    async def _recorded(self, now: int) -> None:
        """One more check counted in Redis in this window (refused ones add nothing, so
        one address asking again and again does not use the room up)."""
        key = self._recorded_key(now // self._window_ms)
        if int(await self._redis.incr(key)) == 1:
            await self._redis.pexpire(key, (HELD_WINDOWS + 1) * self._window_ms)

    async def _room(self, now: int) -> bool:
        """Whether the checks counted in Redis that it may still hold are under
        ``max_recorded``: a set lives a window past its last check, trimmed to a window
        then, so checks begun up to two windows back may be there, not this window's alone
        (filled at the end of one window and the start of the next, twice the bound)."""
        window = now // self._window_ms
        held = await self._redis.mget([self._recorded_key(window - back)
                                       for back in range(HELD_WINDOWS)])
        if sum(int(count or 0) for count in held) < self._max_recorded:
            return True
        left = _SAID.due("full")
        if left is not None:
            log.warning("failed logins not counted across replicas until the window ends: "
                        "%d checks were counted in Redis within it (each replica's own count "
                        "applies, the limits divided among %d live replicas)%s",
                        self._max_recorded, max(1, self._live.count), unsaid(left))
        return False

    async def known(self, user: str, address: str | None) -> bool:
        """Whether ``user`` logged in from ``address`` within a day, on any replica."""
        name, key = user_key(user), self._keys.of(address)
        if key is None or self._limits["user"] <= 0 or not self._health.up:
            return False
        try:
            until = await self._redis.hget(self._sets("user", name)[1], key)
            return until is not None and int(until) > time.time() * 1000
        except Exception as exc:
            self._unshared(exc)
            return False

    async def succeeded(self, attempt: Attempt) -> None:
        """The check succeeded: it is no failure, nor are the name's earlier ones from its
        address, which now counts only its own failures of that name for a day."""
        await self._taken_out(attempt, succeeded=True)

    async def forget(self, attempt: Attempt) -> None:
        """The check never ran (refused for want of a place to wait): no failure."""
        await self._taken_out(attempt, succeeded=False)

    async def _taken_out(self, attempt: Attempt, *, succeeded: bool) -> None:
        calls = [self._take_back(attempt, list(attempt.counted), succeeded=succeeded)]
        if attempt.window >= 0:  # taken out of Redis: no longer held in its room
            calls.append(self._give_back(keys=[self._recorded_key(attempt.window)]))
        for outcome in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(outcome, Exception):
                self._unshared(outcome)
                break

    async def _take_back(self, attempt: Attempt, counted: list[str], *,
                         succeeded: bool = False) -> None:
        now = int(time.time() * 1000)
        calls = []
        for kind in counted:
            value = attempt.user if kind == "user" else attempt.address
            assert value is not None
            keys = self._sets(kind, value)
            # a refused begin takes back only its own member: the name's failures stay
            calls.append(self._script(keys=keys,
                                      args=["succeeded" if succeeded else "forget", now,
                                            self._window_ms, 0,
                                            self._member(attempt), attempt.address or "",
                                            int(KNOWN_SECONDS * 1000), MAX_KNOWN]))
        await asyncio.gather(*calls)  # the kinds' sets are apart (other slots)

    @staticmethod
    def _member(attempt: Attempt) -> str:
        return f"{attempt.member}|{attempt.address or ''}"

    def _unshared(self, exc: BaseException) -> None:
        left = _SAID.due("unshared")
        if left is not None:
            log.warning("failed logins not counted across replicas (the local counts "
                        "apply, the limits divided among %d live replicas): %s%s",
                        max(1, self._live.count), type(exc).__name__, unsaid(left))

    async def close(self) -> None:
        await self._redis.aclose()
