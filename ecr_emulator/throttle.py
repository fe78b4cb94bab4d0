"""Per-action request rates, as ECR's API quotas: beyond them, ThrottlingException.

ECR throttles each API action per account and region with a token bucket (a steady rate and
a burst). ``ECR_EMULATOR_THROTTLE`` (or ``--throttle FILE``) gives the same here as JSON:

    {"PutImage": {"rate": 10, "burst": 20}, "ecr-public:PutImage": {"rate": 5},
     "*": {"rate": 1000}}

``rate`` is calls per second, ``burst`` (default: ``rate``) how many may come at once; ``*``
applies to every action not named. A call past its bucket fails before it runs with
``ThrottlingException`` ("Rate exceeded", 400), which botocore's retry modes retry. Nothing is
throttled by default.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from ecr_emulator.errors import AwsError

ENV = "ECR_EMULATOR_THROTTLE"


@dataclass
class Bucket:
    rate: float
    burst: float
    tokens: float
    stamp: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Throttles:
    def __init__(self, limits: Mapping[str, tuple[float, float]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = dict(limits or {})
        self._clock = clock
        self._buckets: dict[tuple[str, str, str], Bucket] = {}

    @classmethod
    def parse(cls, text: str, source: str = ENV,
              clock: Callable[[], float] = time.monotonic) -> Throttles:
        """ValueError if ``text`` is not the JSON above."""
        try:
            config = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{source} is not JSON: {exc}") from None
        if not isinstance(config, dict):
            raise ValueError(f"{source} must map action names to {{rate, burst}}")
        limits: dict[str, tuple[float, float]] = {}
        for action, rule in config.items():
            rate = rule.get("rate") if isinstance(rule, dict) else None
            burst = rule.get("burst", rate) if isinstance(rule, dict) else None
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                       for v in (rate, burst)):
                raise ValueError(f"{source}: {action!r} needs a positive 'rate' (and 'burst')")
            assert isinstance(rate, (int, float)) and isinstance(burst, (int, float))
            limits[str(action)] = (float(rate), float(burst))
        return cls(limits, clock)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Throttles:
        raw = environ.get(ENV)
        return cls.parse(raw) if raw else cls()

    def check(self, action: str, account: str = "", region: str = "") -> None:
        """Take a token of ``action``'s bucket for the caller's account and region (each
        has buckets of its own, as on AWS); ThrottlingException if there is none."""
        if not self._limits:
            return
        name = action if action in self._limits else "*"
        limit = self._limits.get(name)
        if limit is None:
            return
        now = self._clock()
        key = (account, region, action)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(limit[0], limit[1], limit[1], now)
        if not bucket.take(now):
            raise AwsError("ThrottlingException", "Rate exceeded")


KEY = web.AppKey("emulator_throttles", Throttles)
