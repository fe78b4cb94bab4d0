"""Pull-through events: counted per registry, and named in the access log line of the
request they happened for (``"pullthrough": ["fetched"]`` on the pull that filled ECR)."""

from __future__ import annotations

from gateway.observability.metrics import PULLTHROUGH_EVENTS
from gateway.oci.request import RequestContext


def record(ctx: RequestContext, registry: str, event: str) -> None:
    PULLTHROUGH_EVENTS.labels(registry, event).inc()
    if ctx.events is not None:
        ctx.events.append(event)
