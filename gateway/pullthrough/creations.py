"""New ECR repositories one upstream's fills may create in an hour, in this process.

Whoever may pull through an upstream can ask for any image it holds (Docker Hub holds
millions), and each distinct name is one more ECR repository created with the gateway's
identity. ECR's quota is 10,000 repositories a region by default: spent, it refuses every
team's new repository. Past ``max_new_repositories_per_hour`` an image whose repository ECR
does not hold is served from the upstream but not stored. Filling a repository that exists
takes nothing: a creation ECR answers with "already exists" gives its unit back.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

HOUR = 3600.0


class Creations:
    """A sliding hour of creations, on the event loop (no locking needed)."""

    def __init__(self, per_hour: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_hour = per_hour  # 0: no bound
        self._clock = clock
        self._taken: collections.deque[float] = collections.deque()  # when, oldest first

    def _expire(self) -> float:
        now = self._clock()
        while self._taken and self._taken[0] <= now - HOUR:
            self._taken.popleft()
        return now

    def has_room(self) -> bool:
        self._expire()
        return self.per_hour == 0 or len(self._taken) < self.per_hour

    def take(self) -> float | None:
        """A unit for one creation (given back with :meth:`give_back`), or None past the
        bound."""
        now = self._expire()
        if self.per_hour == 0:
            return now
        if len(self._taken) >= self.per_hour:
            return None
        self._taken.append(now)
        return now

    def give_back(self, unit: float) -> None:
        """The creation did not happen (the repository existed, or ECR refused it)."""
        if self.per_hour and unit in self._taken:
            self._taken.remove(unit)
