"""An upstream's rate-limit headers reach the gauges only as finite numbers ≥ 0."""

from __future__ import annotations

import math

import pytest

from gateway.observability.metrics import (
    PULLTHROUGH_RATELIMIT_LIMIT,
    PULLTHROUGH_RATELIMIT_REMAINING,
    PULLTHROUGH_RATELIMIT_WINDOW,
    PULLTHROUGH_RETRY_AFTER,
)
from gateway.pullthrough.ratelimit import observe, retry_after_seconds


def _gauge(metric: object, registry: str) -> float:
    return float(metric.labels(registry)._value.get())  # type: ignore[attr-defined]


def test_well_formed_headers_are_recorded() -> None:
    observe("good.example", 429, {"RateLimit-Limit": "100;w=21600",
                                  "RateLimit-Remaining": "76;w=21600", "Retry-After": "30"})
    assert _gauge(PULLTHROUGH_RATELIMIT_LIMIT, "good.example") == 100
    assert _gauge(PULLTHROUGH_RATELIMIT_WINDOW, "good.example") == 21600
    assert _gauge(PULLTHROUGH_RATELIMIT_REMAINING, "good.example") == 76
    assert _gauge(PULLTHROUGH_RETRY_AFTER, "good.example") == 30


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "-5", "NaN", "1e999"])
def test_non_finite_or_negative_values_are_dropped(bad: str) -> None:
    registry = f"hostile-{bad}.example"
    observe(registry, 429, {"RateLimit-Limit": f"{bad};w={bad}",
                            "RateLimit-Remaining": bad, "Retry-After": bad})
    for metric in (PULLTHROUGH_RATELIMIT_LIMIT, PULLTHROUGH_RATELIMIT_WINDOW,
                   PULLTHROUGH_RATELIMIT_REMAINING, PULLTHROUGH_RETRY_AFTER):
        value = _gauge(metric, registry)
        assert math.isfinite(value) and value >= 0, (metric, value)


def test_window_alone_bad_keeps_the_count() -> None:
    observe("half.example", 200, {"RateLimit-Limit": "100;w=nan"})
    assert _gauge(PULLTHROUGH_RATELIMIT_LIMIT, "half.example") == 100
    assert _gauge(PULLTHROUGH_RATELIMIT_WINDOW, "half.example") == 0


def test_retry_after_reads_only_finite_times() -> None:
    assert retry_after_seconds("nan") is None
    assert retry_after_seconds("inf") is None
    assert retry_after_seconds("-3") == 0.0
    assert retry_after_seconds("12") == 12.0
