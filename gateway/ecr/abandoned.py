"""Bytes sent to ECR for uploads that ended without completion, per client, over a window.

ECR has no call that cancels an upload: the parts of one cancelled (DELETE), expired or
refused stay in ECR until ECR ends the upload (the embedded emulator: twice
``uploads.idle_timeout_seconds``). Without a bound on them, one client cycling POST, PATCH,
DELETE had ECR hold what it sent at line rate for that whole time (about 200 GB at
30 MiB/s behind the emulator, on the gateway machine's own disk). A client past
``limits.max_abandoned_upload_bytes_per_client`` within the window gets ``429
TOOMANYREQUESTS`` on its next POST or PATCH, with Retry-After until enough of it is older
than the window. Completed uploads never count.

Counted in this process's memory: with Redis, each replica counts what was abandoned through
it (a DELETE, or its own sweep expiring a session), so N replicas let a client leave up to N
times the bound; a restart forgets the count. Bytes of requests already in progress when a
client goes over still reach ECR (at most ``max_uploads_per_client`` bodies).
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable

from gateway.oci import errors as oci
from gateway.oci.errors import OciError


class AbandonedBytes:
    """Per owner (``owner_of`` a client), bytes ECR holds of its unfinished uploads that
    ended within the last ``window`` seconds; ``limit`` 0: no bound, nothing kept."""

    def __init__(self, limit: int, window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._window = window
        self._clock = clock
        # (when, owner, bytes) oldest first; the per-owner sums of what it holds.
        self._ended: deque[tuple[float, str, int]] = deque()
        self._totals: Counter[str] = Counter()

    def _forget_old(self) -> float:
        now = self._clock()
        cutoff = now - self._window
        while self._ended and self._ended[0][0] <= cutoff:
            _, owner, size = self._ended.popleft()
            self._totals[owner] -= size
            if self._totals[owner] <= 0:
                del self._totals[owner]
        return now

    def add(self, owner: str | None, size: int) -> None:
        if not self.limit or owner is None or size <= 0:
            return
        self._ended.append((self._forget_old(), owner, size))
        self._totals[owner] += size

    def held(self, owner: str) -> int:
        self._forget_old()
        return self._totals[owner]

    def check(self, owner: str | None) -> None:
        """429 if ``owner`` is at its bound, with Retry-After until it is under again."""
        if not self.limit or owner is None:
            return
        now = self._forget_old()
        held = self._totals[owner]
        if held < self.limit:
            return
        freed_at = now
        for when, who, size in self._ended:
            if who == owner:
                held -= size
                freed_at = when + self._window
                if held < self.limit:
                    break
        raise OciError(oci.TOOMANYREQUESTS, {"limit": self.limit},
                       message="this client's cancelled or expired uploads left too many "
                               "bytes in ECR (limits.max_abandoned_upload_bytes_per_client): "
                               "finish uploads rather than start new ones",
                       headers={"Retry-After": str(max(1, math.ceil(freed_at - now)))})
