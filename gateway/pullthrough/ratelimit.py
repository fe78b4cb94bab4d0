"""What an upstream registry says of its rate limit, as metrics per registry.

Docker Hub answers manifest requests with ``RateLimit-Limit: 100;w=21600`` and
``RateLimit-Remaining: 76;w=21600`` (pulls per window of w seconds), and a 429 with
``Retry-After``. The label is the registry's host name as configured: never a URL, a path or
a credential.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping

from gateway.observability.metrics import (
    PULLTHROUGH_RATELIMIT_LIMIT,
    PULLTHROUGH_RATELIMIT_REMAINING,
    PULLTHROUGH_RATELIMIT_WINDOW,
    PULLTHROUGH_RETRY_AFTER,
    PULLTHROUGH_THROTTLED,
)


def observe(registry: str, status: int, headers: Mapping[str, str]) -> None:
    """Record the rate-limit headers of one upstream answer."""
    limit = _quota(headers.get("RateLimit-Limit"))
    if limit is not None:
        PULLTHROUGH_RATELIMIT_LIMIT.labels(registry).set(limit[0])
        if limit[1] is not None:
            PULLTHROUGH_RATELIMIT_WINDOW.labels(registry).set(limit[1])
    remaining = _quota(headers.get("RateLimit-Remaining"))
    if remaining is not None:
        PULLTHROUGH_RATELIMIT_REMAINING.labels(registry).set(remaining[0])
    if status == 429:
        PULLTHROUGH_THROTTLED.labels(registry).inc()
        wait = retry_after_seconds(headers.get("Retry-After"))
        if wait is not None:
            PULLTHROUGH_RETRY_AFTER.labels(registry).set(wait)


def _quota(value: str | None) -> tuple[float, float | None] | None:
    """``100;w=21600`` → (100, 21600); ``100`` → (100, None); anything else → None (a
    count or window that is not a finite number ≥ 0, such as ``nan`` or ``inf``, too)."""
    if not value:
        return None
    count, *params = (part.strip() for part in value.split(";"))
    number = _count(count)
    if number is None:
        return None
    window = None
    for param in params:
        key, _, raw = param.partition("=")
        if key.strip().lower() == "w":
            window = _count(raw)
    return number, window


def _count(text: str) -> float | None:
    """``text`` as a finite number ≥ 0 (None otherwise): an upstream's header never puts
    nan, inf or a negative number into a gauge."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date counted from now (None when it
    is neither, or not finite)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)
