"""OpenTelemetry traces: one server span per request, a child span per ECR action attempt
and per outbound HTTP call (blob reads in proxy mode, mount copies, ECR Public).

Configured only by the standard ``OTEL_*`` environment variables (``OTEL_EXPORTER_OTLP_
ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or ``OTEL_TRACES_EXPORTER=otlp``;
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``):
spans leave over OTLP/HTTP. Without them nothing is set up, the SDK is never imported, and
the hooks below return at their first test (the API's current span is the invalid one).

Span attributes never carry secrets: URLs lose their query (presigned URLs sign there) and
user info; repository names, actions, attempts and outcomes are all that ECR spans carry.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from gateway.auth.forwarded import ProxyTrust

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def requested(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces (the OTEL_* conventions)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER")
    if exporter is not None:
        return exporter.strip().lower() == "otlp"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def caller_context(request: web.Request,
                   trust: ProxyTrust) -> tuple[Context | None, list[trace.Link]]:
    """The parent of a request's span: the caller's ``traceparent`` when it comes from a
    trusted proxy (``trusted_proxies``: a traced service in front, as for X-Forwarded-*);
    anyone else's is only a link from a new trace. A parent decides sampling (``-00`` would
    hide a client's requests from traces, ``-01`` would have them exported under a ratio
    sampler) and would let any client put the gateway's spans in a trace of its choosing."""
    if not request.headers.get("traceparent"):
        return None, []
    given = extract(request.headers)
    if trust.trusts(request.remote):
        return given, []
    caller = trace.get_current_span(given).get_span_context()
    return None, [trace.Link(caller)] if caller.is_valid else []


class Tracing:
    """The process's tracer provider, exporting over OTLP/HTTP in batches."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider
        self.tracer = provider.get_tracer("ecr-gateway")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], version: str) -> Tracing | None:
        if not requested(environ):
            return None
        # Imported here: a gateway without traces never loads the SDK.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # Attributes given here win over OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES: name
        # the service only when the environment does not.
        attributes = {"service.version": version}
        if not environ.get("OTEL_SERVICE_NAME") \
                and "service.name=" not in environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
            attributes["service.name"] = "ecr-gateway"
        resource = Resource.create(attributes)
        provider = TracerProvider(resource=resource)
        # A client's malformed tracestate would be a warning per request, its wording theirs.
        logging.getLogger("opentelemetry.trace.span").setLevel(logging.ERROR)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        log.info("traces: exporting over OTLP/HTTP (OTEL_* environment)")
        return cls(provider)

    def shutdown(self) -> None:
        """Send what is still buffered (called once the server has drained)."""
        self._provider.shutdown()

    def middleware(self, trust: ProxyTrust) -> Middleware:
        """A SERVER span per request; ``trust`` says whose trace context is believed."""
        tracer = self.tracer

        @web.middleware
        async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
            parent, links = caller_context(request, trust)
            with tracer.start_as_current_span(
                    f"{request.method}", context=parent, links=links, kind=SpanKind.SERVER,
                    record_exception=False, set_status_on_exception=False) as span:
                span.set_attribute("http.request.method", request.method)
                span.set_attribute("url.path", request.rel_url.path)
                request_id = request.get("request_id")
                if request_id:
                    span.set_attribute("ecr_gateway.request_id", str(request_id))
                status = 500
                try:
                    response = await handler(request)
                    status = response.status
                    return response
                except web.HTTPException as exc:
                    status = exc.status
                    raise
                finally:
                    route = request.get("route")
                    if route:
                        span.update_name(f"{request.method} {route}")
                        span.set_attribute("http.route", str(route))
                    repository = request.get("repository")
                    if repository:
                        span.set_attribute("ecr_gateway.repository", str(repository))
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))

        return traced

    def client_trace_config(self) -> aiohttp.TraceConfig:
        """A CLIENT span per outbound HTTP request of an aiohttp session."""
        tracer = self.tracer
        config = aiohttp.TraceConfig()

        async def start(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                        params: aiohttp.TraceRequestStartParams) -> None:
            if not trace.get_current_span().is_recording():
                return  # outside a traced request: no orphan spans
            url = params.url
            span = tracer.start_span(f"HTTP {params.method}", kind=SpanKind.CLIENT)
            span.set_attribute("http.request.method", params.method)
            span.set_attribute("server.address", url.host or "")
            span.set_attribute("url.full", str(url.with_query(None).with_user(None)
                                               .with_password(None).with_fragment(None)))
            ctx.span = span

        async def end(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                      params: aiohttp.TraceRequestEndParams) -> None:
            span = getattr(ctx, "span", None)
            if span is not None:
                span.set_attribute("http.response.status_code", params.response.status)
                if params.response.status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                span.end()

        async def failed(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                         params: aiohttp.TraceRequestExceptionParams) -> None:
            span = getattr(ctx, "span", None)
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, type(params.exception).__name__))
                span.end()

        config.on_request_start.append(start)
        config.on_request_end.append(end)
        config.on_request_exception.append(failed)
        return config


class EcrAttemptSpan:
    """A CLIENT span around one ECR call attempt, when the request is traced."""

    __slots__ = ("_scope", "_span")

    def __init__(self, action: str, attempt: int, params: Mapping[str, Any]) -> None:
        self._span: Any = None
        self._scope: Any = None
        if not trace.get_current_span().is_recording():
            return
        tracer = trace.get_tracer("ecr-gateway")
        span = tracer.start_span(f"ECR {action}", kind=SpanKind.CLIENT)
        span.set_attribute("rpc.system", "aws-api")
        span.set_attribute("rpc.service", "ECR")
        span.set_attribute("rpc.method", action)
        span.set_attribute("ecr_gateway.attempt", attempt)
        repository = params.get("repositoryName")
        if isinstance(repository, str):
            span.set_attribute("aws.ecr.repository", repository)
        self._span = span

    def finish(self, outcome: str) -> None:
        span = self._span
        if span is None:
            return
        span.set_attribute("ecr_gateway.outcome", outcome)
        if outcome != "ok":
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end()
