"""Failed logins, counted per user name and per client address over a sliding window.

Once a user name (or an address) has failed ``max_failures`` times within the window, its
further attempts are refused with 429 before the password is even looked at, until the
oldest failure leaves the window. A success clears that user's count from that address.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


class FailedLogins:
    def __init__(self, window: float, per_user: int, per_address: int, *,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._window = window
        self._limits = {"user": per_user, "address": per_address}
        self._clock = clock
        self._max_keys = max_keys
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def retry_after(self, user: str | None, address: str | None) -> int | None:
        """Seconds until ``user`` from ``address`` may try again; None if not blocked now."""
        now = self._clock()
        waits = []
        for kind, value in (("user", user), ("address", address)):
            limit = self._limits[kind]
            if value is None or limit <= 0:
                continue
            times = self._recent((kind, value), now)
            if times is not None and len(times) >= limit:
                waits.append(times[-limit] + self._window - now)
        return max(1, math.ceil(max(waits))) if waits else None

    def failed(self, user: str | None, address: str | None) -> None:
        now = self._clock()
        if len(self._failures) >= self._max_keys:
            self._forget_old(now)
        for kind, value in (("user", user), ("address", address)):
            if value is None:
                continue
            times = self._failures.setdefault((kind, value), deque(maxlen=1000))
            times.append(now)

    def succeeded(self, user: str, address: str | None) -> None:
        self._failures.pop(("user", user), None)

    def _recent(self, key: tuple[str, str], now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self._window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def _forget_old(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
