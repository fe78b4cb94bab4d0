"""Pull-through events: counted per registry, and named in the access log line of the
request they happened for (``"pullthrough": ["fetched"]`` on the pull that filled ECR)."""

from __future__ import annotations

import contextvars

from gateway.ecr.calls import upstream_calls
from gateway.observability.metrics import PULLTHROUGH_EVENTS

# The events of the request being served (set by the app's middleware; None outside one).
request_events: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "pullthrough_events", default=None)


def record(registry: str, event: str) -> None:
    PULLTHROUGH_EVENTS.labels(registry, event).inc()
    tally = request_events.get()
    if tally is not None:
        tally.append(event)


def detach() -> None:
    """For a background task (it copied the request's context): what it does later is not
    that request's (nor are its ECR calls)."""
    request_events.set(None)
    upstream_calls.set(None)
