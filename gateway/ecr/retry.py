"""The one retry policy for upstream calls: capped exponential backoff with full jitter,
inside a time budget per call; throttles, server faults and failed or cut connections only."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from gateway.ecr.breaker import CircuitBreaker

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    budget_seconds: float = 10.0
    base_delay: float = 0.05
    max_delay: float = 2.0
    # Shared by every call under this policy: an endpoint that keeps failing is not retried.
    breaker: CircuitBreaker | None = field(default=None, compare=False)

    async def run(self, call: Callable[[], Awaitable[T]], retriable: Callable[[BaseException], bool]
                  ) -> T:
        deadline = time.monotonic() + self.budget_seconds
        attempt = 0
        while True:
            try:
                return await call()
            except Exception as exc:
                if not retriable(exc):
                    raise
                delay = random.uniform(0, min(self.max_delay, self.base_delay * 2 ** attempt))
                if time.monotonic() + delay >= deadline:
                    raise
                attempt += 1
                await asyncio.sleep(delay)
