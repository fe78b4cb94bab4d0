"""Injected failures: the ways a real ECR and a real network fail, on demand.

Some of ECR's modelled errors cannot arise in an emulator (ServerException, KmsException,
ThrottlingException under load), and networks add their own ambiguity (did my part land?);
clients still have to handle all of it. ``POST /_emulator/faults`` adds a rule:

* ``{"action": "PutImage", "error": "ThrottlingException", "count": 2}``: the next two
  PutImage calls fail that way (``"action": "*"`` matches every action; ``status`` defaults
  to 500 for ServerException, else 400; ``message`` is optional);
* ``"rate": 0.05`` instead of ``count``: each matching call fails with that probability, until
  the rules are deleted;
* ``"after": true``: the action is performed first, then the error is answered (for
  UploadLayerPart's InvalidLayerPartException the answer carries the real
  ``lastValidByteReceived``: the part was in fact stored);
* ``"latency": 0.2`` (seconds) instead of an error: the call is delayed that long;
* ``"disconnect": true`` instead of an error: the action is performed, then the connection is
  closed half-way through the response.

``{"seed": 42}`` (alone or with a rule) reseeds the random draws so a run is reproducible.
``DELETE`` removes every rule; ``GET`` lists them with how many faults each action got. The
environment variable ``ECR_EMULATOR_FAULTS`` may hold the same at start, as a JSON list of
rules or ``{"seed": 42, "rules": [...]}``. Nothing is injected by default.
"""

from __future__ import annotations

import math
import os
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from ecr_emulator.control import FAULTS_ENV as ENV
from ecr_emulator.errors import AwsError


@dataclass
class Fault:
    action: str
    error: str
    message: str
    status: int
    remaining: int
    rate: float | None = None  # None: count-based (``remaining`` calls)
    after: bool = False  # the action is performed, then the error answered
    latency: float = 0.0  # seconds added (a latency rule has no error)
    disconnect: bool = False  # performed, then the connection is cut mid-response

    @property
    def kind(self) -> str:
        if self.latency:
            return "latency"
        if self.disconnect:
            return "disconnect"
        return f"{self.error}{' (after)' if self.after else ''}"


@dataclass
class Plan:
    """What one call suffers: a delay, an error before or after it runs, or a cut response."""

    delay: float = 0.0
    error: AwsError | None = None
    after: AwsError | None = None
    disconnect: bool = False
    kinds: list[str] = field(default_factory=list)


class Faults:
    def __init__(self, seed: int | None = None) -> None:
        self._pending: list[Fault] = []
        self._random = random.Random(seed)
        self.seed = seed
        self.injected: Counter[tuple[str, str]] = Counter()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Faults:
        """Rules from ``ECR_EMULATOR_FAULTS``; ValueError if it is malformed."""
        faults = cls()
        raw = environ.get(ENV)
        if raw:
            try:
                config = orjson.loads(raw)  # refuses NaN and nesting past 1024 levels
            except ValueError as exc:
                raise ValueError(f"{ENV} is not JSON: {exc}") from None
            if isinstance(config, dict):
                if "seed" in config:
                    faults.reseed(config["seed"])
                config = config.get("rules", [])
            if not isinstance(config, list) or not all(isinstance(r, dict) for r in config):
                raise ValueError(f"{ENV} must be a list of rules or {{seed, rules}}")
            for rule in config:
                faults.add_from_json(rule)
        return faults

    def add(self, fault: Fault) -> None:
        self._pending.append(fault)

    def clear(self) -> None:
        self._pending.clear()

    def reseed(self, seed: object) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError("'seed' must be an integer")
        self.seed = seed
        self._random.seed(seed)

    def _fires(self, fault: Fault, action: str) -> bool:
        if fault.action not in (action, "*"):
            return False
        if fault.rate is not None:
            return self._random.random() < fault.rate
        fault.remaining -= 1
        if fault.remaining <= 0:
            self._pending.remove(fault)
        return True

    def plan(self, action: str) -> Plan:
        """Draw what the next call of ``action`` suffers (each rule in order)."""
        plan = Plan()
        for fault in list(self._pending):
            if fault.latency:
                if self._fires(fault, action):
                    plan.delay += fault.latency
                    plan.kinds.append(fault.kind)
                continue
            if plan.error or plan.after or plan.disconnect or not self._fires(fault, action):
                continue
            plan.kinds.append(fault.kind)
            if fault.disconnect:
                plan.disconnect = True
            elif fault.after:
                plan.after = AwsError(fault.error, fault.message, status=fault.status)
            else:
                plan.error = AwsError(fault.error, fault.message, status=fault.status)
        for kind in plan.kinds:
            self.injected[(action, kind)] += 1
        return plan

    def take(self, action: str) -> AwsError | None:
        """The error the next call of ``action`` must fail with before it runs, if any."""
        return self.plan(action).error

    def describe(self) -> list[dict[str, object]]:
        return [vars(f).copy() for f in self._pending]

    def stats(self) -> dict[str, dict[str, int]]:
        """How many faults of each kind every action got."""
        out: dict[str, dict[str, int]] = {}
        for (action, kind), count in sorted(self.injected.items()):
            out.setdefault(action, {})[kind] = count
        return out

    def add_from_json(self, body: Mapping[str, object]) -> None:
        """Add the rule ``POST /_emulator/faults`` describes; ValueError if malformed."""
        if "seed" in body:
            self.reseed(body["seed"])
            if set(body) == {"seed"}:
                return
        error = body.get("error")
        latency = _number(body, "latency", 0.0)
        disconnect = body.get("disconnect") is True
        if latency < 0 or latency > 60:
            raise ValueError("'latency' must be between 0 and 60 seconds")
        if not latency and not disconnect and (not isinstance(error, str) or not error):
            raise ValueError("'error' must name an AWS error, e.g. ServerException (or give "
                             "'latency' or 'disconnect')")
        if sum((bool(latency), disconnect, isinstance(error, str) and bool(error))) != 1:
            raise ValueError("a rule is one of 'error', 'latency' or 'disconnect'")
        rate = None
        if "rate" in body:
            rate = _number(body, "rate", 0.0)
            if not 0 <= rate <= 1:
                raise ValueError("'rate' must be between 0 and 1")
        name = error if isinstance(error, str) else ""
        # An AWS error is a 4xx or 5xx: any other status is no error to a client, or no
        # valid HTTP status line at all.
        status = _integer(body, "status", 500 if name == "ServerException" else 400)
        if not 400 <= status <= 599:
            raise ValueError("'status' must be an HTTP error status, 400 to 599")
        count = _integer(body, "count", 1)
        if count < 1:
            raise ValueError("'count' must be at least 1")
        self.add(Fault(
            action=str(body.get("action", "*")),
            error=name,
            message=str(body.get("message", f"Injected {name or 'fault'}")),
            status=status,
            remaining=count,
            rate=rate,
            after=body.get("after") is True,
            latency=latency,
            disconnect=disconnect,
        ))


def _number(body: Mapping[str, object], key: str, default: float) -> float:
    value = body.get(key, default)
    # NaN passes every range check and then sleeps for ever (latency) or never fires.
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value)):
        raise ValueError(f"'{key}' must be a number")
    return float(value)


def _integer(body: Mapping[str, object], key: str, default: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"'{key}' must be an integer")
    return value
