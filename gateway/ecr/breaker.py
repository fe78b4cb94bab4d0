"""A circuit breaker per upstream endpoint, so that a dead ECR costs requests milliseconds.

Without it every request would spend the whole retry budget reconnecting to an endpoint that
refuses connections. After ``threshold`` consecutive outage failures (connection refused,
reset or timed out, the answer cut short, 5xx) the endpoint is *open*: calls fail at once
with 503 UNAVAILABLE and a Retry-After of the time left. After ``open_seconds`` one call is let
through as a probe (*half-open*); its success closes the breaker, its failure opens it again.
Any answer from ECR, throttles and client errors included, counts as a success: the service
is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.oci import errors as oci
from gateway.oci.errors import OciError

log = logging.getLogger(__name__)


@dataclass
class _State:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


class CircuitBreaker:
    def __init__(self, threshold: int = 5, open_seconds: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold  # 0: never open
        self.open_seconds = open_seconds
        self._clock = clock
        self._states: dict[str, _State] = {}

    def _state(self, endpoint: str) -> _State:
        return self._states.setdefault(endpoint, _State())

    def is_open(self, endpoint: str) -> bool:
        """Whether calls to ``endpoint`` are currently refused without being tried."""
        state = self._states.get(endpoint)
        if state is None or state.opened_at is None:
            return False
        return state.probing or self._clock() - state.opened_at < self.open_seconds

    def before(self, endpoint: str) -> None:
        """Raise 503 if ``endpoint`` is open; in half-open state let exactly one call pass."""
        if self.threshold <= 0:
            return
        state = self._state(endpoint)
        if state.opened_at is None:
            return
        waited = self._clock() - state.opened_at
        if waited >= self.open_seconds and not state.probing:
            state.probing = True  # this call is the probe
            return
        retry_after = max(1, math.ceil(self.open_seconds - waited))
        # The endpoint is the operator's to know (a VPC endpoint, an internal proxy): the log
        # names it when the circuit opens, the client is only told to come back.
        raise OciError(oci.UNAVAILABLE, {"reason": "circuit open"},
                       message="upstream ECR unreachable (circuit open)",
                       headers={"Retry-After": str(retry_after)})

    def success(self, endpoint: str) -> None:
        state = self._state(endpoint)
        state.failures = 0
        state.opened_at = None
        state.probing = False

    def failure(self, endpoint: str) -> None:
        if self.threshold <= 0:
            return
        state = self._state(endpoint)
        state.failures += 1
        if state.probing or state.failures >= self.threshold:
            if state.opened_at is None:
                log.warning("upstream ECR %s unreachable after %d attempts in a row: calls "
                            "to it fail at once for %.1fs, then one is tried", _host(endpoint),
                            state.failures, self.open_seconds)
            state.opened_at = self._clock()
            state.probing = False

    def released(self, endpoint: str) -> None:
        """A probe that ended with neither answer nor outage (cancelled): let another try."""
        state = self._states.get(endpoint)
        if state is not None:
            state.probing = False


def _host(endpoint: str) -> str:
    return urlsplit(endpoint).netloc or endpoint


async def reachable(endpoint: str, within: float = 2.0) -> bool:
    """Whether a TCP connection to ``endpoint`` (a URL) opens within ``within`` seconds."""
    parts = urlsplit(endpoint)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        async with asyncio.timeout(within):
            _, writer = await asyncio.open_connection(parts.hostname, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
