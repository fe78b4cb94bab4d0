"""Failed logins, counted per user name and per client address over a sliding window.

Once a user name (or an address) has failed ``max_failures`` times within the window, its
further attempts are refused with 429 before the password is even looked at, until the
oldest failure leaves the window. A success clears that user's count from that address.

A user name is public knowledge (an access key id, a node's account), so failures from
strangers must not lock its owner out: an address the user logged in from within
``KNOWN_SECONDS`` counts only that user's failures from that address, not everyone's. A
guesser elsewhere stays limited by all of them; one at an owner's address by its own.

An address counts by its client key (gateway/auth/client_keys.py): an IPv6 client by its
/64 (a host handed a whole /64 would otherwise have 2**64 fresh limits, and fill this table
without end), one carrying an IPv4 client's address (NAT64, Teredo, 6to4) by that address.

Checks still under way count as failures until they end (:meth:`FailedLogins.attempt`): a
burst of concurrent guesses would otherwise all pass the limit before the first of them
failed. The table holds at most ``max_keys`` names and addresses: past it, those whose
last failure is the oldest are forgotten first. A name is the caller's to choose, up to the
megabyte of a token form, so one longer than any real name is kept as its digest: each key
costs a bounded few hundred bytes, whatever was sent.

These counts are this process's; replicas sharing Redis also count every check there
(gateway/auth/shared_failures.py), so the limits hold for all of them together.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import overload

from cachetools import TTLCache

from gateway.auth.client_keys import DEFAULT_CLIENT_KEYS, ClientKeys

# How long an address the user logged in from keeps its own count for that user.
KNOWN_SECONDS = 86400.0
# Longer than any user name or access key id (at most 128 characters): kept as a digest.
MAX_KEPT_NAME = 256


class FailedLogins:
    def __init__(self, window: float, per_user: int, per_address: int, *,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000,
                 keys: ClientKeys = DEFAULT_CLIENT_KEYS) -> None:
        self._keys = keys
        self._window = window
        self._limits = {"user": per_user, "address": per_address}
        self._clock = clock
        self._max_keys = max_keys
        # Each failure's time, and for a user's failures the address they came from; keys
        # in the order of their last failure (the least recent first).
        self._failures: dict[tuple[str, str], deque[tuple[float, str | None]]] = {}
        # Checks under way: per ("user", name) and ("address", key), and per (name, key)
        # for a user's count at an address it logged in from.
        self._trying: Counter[tuple[str, str]] = Counter()
        self._trying_from: Counter[tuple[str, str]] = Counter()
        # (user, address) pairs that logged in: only successes add to it, so it is bounded
        # by the real users' addresses (and max_keys), not by what failures send.
        self._known: TTLCache[tuple[str, str], bool] = TTLCache(max_keys, KNOWN_SECONDS,
                                                                timer=clock)

    def retry_after(self, user: str | None, address: str | None,
                    share: int = 1) -> int | None:
        """Seconds until ``user`` from ``address`` may try again; None if not blocked now.
        ``share``: the replicas whose own counts hold the limits together (each holds its
        part, rounded up)."""
        user, address = user_key(user), self._keys.of(address)
        now = self._clock()
        waits = []
        for kind, value in (("user", user), ("address", address)):
            if value is None or self._limits[kind] <= 0:
                continue
            limit = -(-self._limits[kind] // max(1, share))
            times = self._recent((kind, value), now) or deque()
            trying = self._trying[(kind, value)]
            if kind == "user" and address is not None and (value, address) in self._known:
                times = deque(t for t in times if t[1] == address)  # its own failures only
                trying = self._trying_from[(value, address)]
            if len(times) >= limit:
                waits.append(times[-limit][0] + self._window - now)
            elif len(times) + trying >= limit:
                waits.append(1.0)  # the checks under way end within a second or so
        return max(1, math.ceil(max(waits))) if waits else None

    def attempt(self, user: str | None, address: str | None) -> Callable[[], None]:
        """A check of ``user``'s password from ``address`` begins: it counts against both
        limits as a failure would until the function returned is called (once)."""
        user, address = user_key(user), self._keys.of(address)
        counted = [(self._trying, (kind, value))
                   for kind, value in (("user", user), ("address", address)) if value]
        if user and address:
            counted.append((self._trying_from, (user, address)))
        for counter, key in counted:
            counter[key] += 1

        def end() -> None:
            for counter, key in counted:
                counter[key] -= 1
                if counter[key] <= 0:
                    del counter[key]
            counted.clear()

        return end

    def is_known(self, user: str, address: str) -> bool:
        """Whether ``user`` logged in from ``address`` within ``KNOWN_SECONDS``."""
        key = self._keys.of(address)
        return key is not None and (user_key(user), key) in self._known

    def known(self, user: str, address: str) -> None:
        """``user`` logged in from ``address`` elsewhere (another replica): there only that
        address's own failures of ``user`` count, as if it had logged in here."""
        key = self._keys.of(address)
        if key is not None:
            self._known[(user_key(user), key)] = True

    def failed(self, user: str | None, address: str | None) -> None:
        user, address = user_key(user), self._keys.of(address)
        now = self._clock()
        if len(self._failures) >= self._max_keys:
            self._forget_old(now)
        for kind, value in (("user", user), ("address", address)):
            if value is None:
                continue
            # Moved to the end: the keys stay in the order of their last failure.
            times = self._failures.pop((kind, value), None) or deque(maxlen=1000)
            times.append((now, address))
            self._failures[(kind, value)] = times

    def succeeded(self, user: str, address: str | None) -> None:
        """Forget ``user``'s failures from ``address`` only: the owner logging in elsewhere
        must not wipe the count of someone guessing the password from other addresses."""
        user, address = user_key(user), self._keys.of(address)
        if address is not None:
            self._known[(user, address)] = True
        times = self._failures.get(("user", user))
        if times is None:
            return
        kept = deque((t for t in times if t[1] != address), maxlen=times.maxlen)
        if kept:
            self._failures[("user", user)] = kept
        else:
            del self._failures[("user", user)]

    def _recent(self, key: tuple[str, str],
                now: float) -> deque[tuple[float, str | None]] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0][0] <= now - self._window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def _forget_old(self, now: float) -> None:
        """Drop the keys whose last failure left the window, then, while the table is still
        full, those whose last failure is the oldest. Both from the front: nothing else is
        looked at (a failure never walks the whole table)."""
        failures = self._failures
        while failures:
            key = next(iter(failures))
            times = failures[key]
            if times and times[-1][0] > now - self._window:
                break
            del failures[key]
        while len(failures) >= self._max_keys:
            del failures[next(iter(failures))]


@overload
def user_key(user: str) -> str: ...


@overload
def user_key(user: None) -> None: ...


def user_key(user: str | None) -> str | None:
    """What failures for ``user`` count against: the name, or a longer one's digest."""
    if user is None or len(user) <= MAX_KEPT_NAME:
        return user
    digest = hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256:{digest}"
