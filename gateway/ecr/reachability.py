"""How often ``/readyz`` may open a connection to ECR: anyone who reaches the registry port
may ask it, and each fresh check opens (and closes) a TCP connection to the endpoint. At
thousands of requests a second that left thousands of sockets in TIME-WAIT toward ECR, the
ports the gateway's own new connections need. Concurrent checks of an endpoint share one
connection, and one that succeeded stands for ``fresh_seconds``; a failure is never reused,
so a dead endpoint is reported at the next check."""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.ecr.breaker import reachable
from gateway.ecr.singleflight import SingleFlight


class Reachability:
    def __init__(self, fresh_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fresh_seconds = fresh_seconds
        self._clock = clock
        self._reached_at: dict[str, float] = {}
        self._checks: SingleFlight[bool] = SingleFlight("readyz_reachable")

    async def check(self, endpoint: str) -> bool:
        reached_at = self._reached_at.get(endpoint)
        if reached_at is not None and self._clock() - reached_at < self.fresh_seconds:
            return True
        ok = await self._checks.do(endpoint, lambda: reachable(endpoint))
        if ok:
            self._reached_at[endpoint] = self._clock()
        else:
            self._reached_at.pop(endpoint, None)
        return ok
