"""Every Prometheus metric the gateway exports, defined once, and the small hooks that feed
them. ``GET /metrics`` renders :data:`REGISTRY` in the Prometheus text format.

Labels stay bounded: ``route`` is the spec endpoint id (``end-3``…), never a repository
name; ``method`` is one the gateway serves or ``other``; ``action`` is an ECR API action;
``outcome`` is ``ok`` or ECR's exception name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

REQUESTS = Counter("ecr_gateway_http_requests", "HTTP requests served",
                   ["route", "method", "status"], registry=REGISTRY)
REQUEST_SECONDS = Histogram("ecr_gateway_http_request_duration_seconds",
                            "Time from request start to the last byte of the response",
                            ["route", "method"], buckets=_LATENCY, registry=REGISTRY)
BYTES_IN = Counter("ecr_gateway_http_received_bytes", "Request body bytes received",
                   ["route"], registry=REGISTRY)
BYTES_OUT = Counter("ecr_gateway_http_sent_bytes", "Response bytes sent (headers and body)",
                    ["route"], registry=REGISTRY)
IN_FLIGHT = Gauge("ecr_gateway_http_requests_in_flight", "Requests being served now",
                  registry=REGISTRY)
UPLOAD_SESSIONS = Gauge("ecr_gateway_upload_sessions_active",
                        "Open upload sessions in the session store (all replicas with redis)",
                        registry=REGISTRY)
REDIS_DOWN = Gauge("ecr_gateway_redis_down", "1 while this replica takes the shared Redis as "
                   "down (no answer within state.redis_timeout_seconds): commands that need "
                   "it fail at once until it answers a PING", registry=REGISTRY)
REDIS_REFUSED = Counter("ecr_gateway_redis_refused", "Redis commands failed at once, unsent, "
                        "while the shared Redis was taken as down", registry=REGISTRY)
UPSTREAM_CALLS = Counter("ecr_gateway_upstream_calls", "ECR API call attempts", ["action"],
                         registry=REGISTRY)
UPSTREAM_RESULTS = Counter("ecr_gateway_upstream_results", "ECR API call attempts by outcome "
                           "(ok, or the ECR exception name)", ["action", "outcome"],
                           registry=REGISTRY)
UPSTREAM_SECONDS = Histogram("ecr_gateway_upstream_call_duration_seconds",
                             "Latency of one ECR API call attempt", ["action"],
                             buckets=_LATENCY, registry=REGISTRY)
UPSTREAM_RETRIES = Counter("ecr_gateway_upstream_retries", "ECR API call attempts that were "
                           "retries of a throttled or failed attempt", ["action"],
                           registry=REGISTRY)
UPSTREAM_THROTTLES = Counter("ecr_gateway_upstream_throttles",
                             "ECR API call attempts answered with a throttling error",
                             ["action"], registry=REGISTRY)
TOKEN_CACHE = Counter("ecr_gateway_token_cache_events",
                      "ECR authorization token cache: hit, miss (an upstream fetch), shared "
                      "(a miss that joined a fetch already in flight)", ["event"],
                      registry=REGISTRY)
CACHE = Counter("ecr_gateway_cache_events", "Manifest, tag, download-URL, membership, staging "
                "and blob cache events (hit, miss, fill, evict, ...)", ["cache", "event"],
                registry=REGISTRY)
SHARED_CALLS = Counter("ecr_gateway_singleflight_shared", "Upstream lookups that joined an "
                       "identical one already in flight instead of calling ECR", ["kind"],
                       registry=REGISTRY)

PULLTHROUGH_EVENTS = Counter("ecr_gateway_pullthrough_events", "Pull-through from an upstream "
                             "registry by mirror host: fetched, streamed (a blob read as it "
                             "arrives), filled, revalidated, stale "
                             "(ECR's copy served when the upstream does not confirm the "
                             "tag), fill_failed, rate_limited, unreachable, missing (404), "
                             "refused (400, or 401/403 after the auth flow), "
                             "credentials_refused (the configured credentials are wrong), "
                             "upstream_error, too_slow (a blob's body fell below "
                             "upstream.blob_min_rate), "
                             "spool_full (a cold blob refused: the spool budget is taken), "
                             "store_deferred (a manifest served but not stored: too many "
                             "bytes of manifests are being stored), repositories_full (an "
                             "image served but not stored: its repository would pass "
                             "upstream.max_new_repositories_per_hour)",
                             ["registry", "event"], registry=REGISTRY)
PULLTHROUGH_SPOOL_BYTES = Gauge("ecr_gateway_pullthrough_spool_bytes",
                                "Disk taken now by blobs being pulled through (spooled while "
                                "they are copied into ECR), bounded by "
                                "blobs.staging.pullthrough_max_bytes", registry=REGISTRY)
UPLOAD_SPOOL_BYTES = Gauge("ecr_gateway_upload_spool_bytes",
                           "Disk taken by the spools of unfinished uploads (as this process "
                           "last counted them), bounded by blobs.staging.spools_max_bytes",
                           registry=REGISTRY)
UPLOAD_REFUSALS = Counter("ecr_gateway_upload_refusals", "Upload requests refused with 429 "
                          "for what unfinished uploads hold, by bound: unfinished_bytes (a "
                          "client's bytes in ECR, limits.max_abandoned_upload_bytes_per_client), "
                          "tail_total (the local session store's tails, "
                          "limits.max_upload_tail_bytes)", ["bound"], registry=REGISTRY)
REPLICA_SETTINGS_DISAGREEING = Gauge("ecr_gateway_replica_settings_disagreeing",
                                     "Settings replicas sharing Redis enforce together that a "
                                     "live replica holds otherwise than this one "
                                     "(gateway/state/agreement.py)", registry=REGISTRY)
CLIENT_CONNECTIONS = Gauge("ecr_gateway_client_connections", "Client connections open, "
                           "bounded by limits.max_client_connections", registry=REGISTRY)
CONNECTION_REFUSALS = Counter("ecr_gateway_connection_refusals", "Client connections answered "
                              "and closed before anything was read, by bound: total (503, "
                              "limits.max_client_connections), client (429, the address holds "
                              "limits.max_connections_per_client)", ["bound"],
                              registry=REGISTRY)
REFERRERS_REFUSALS = Counter("ecr_gateway_referrers_refusals", "Referrers reads refused for "
                              "want of room in limits.max_referrers_bytes, by bound: client "
                              "(429, the client holds its quarter already), total (503, none "
                              "came within the wait), send_timeout (an answer its client did "
                              "not read within limits.referrers_send_timeout_seconds: the "
                              "connection closed, the room given back)", ["bound"],
                              registry=REGISTRY)
DOWNLOAD_REFUSALS = Counter("ecr_gateway_blob_download_refusals", "Blob reads refused with "
                            "429 in proxy mode because their client streamed "
                            "limits.max_blob_downloads_per_client blobs from storage already "
                            "and none of them ended within limits.blob_download_wait_seconds",
                            registry=REGISTRY)
PASSWORD_CHECKS_WAITING = Gauge("ecr_gateway_password_checks_waiting", "htpasswd password "
                                "checks waiting for a thread, by lane: known (a name from an "
                                "address where it logged in, served first), unknown",
                                ["lane"], registry=REGISTRY)
PASSWORD_CHECK_REFUSALS = Counter("ecr_gateway_password_check_refusals", "Logins refused with "
                                  "429 because their lane of password checks waiting was "
                                  "full (auth.max_waiting_password_checks), by lane: known, "
                                  "unknown", ["lane"], registry=REGISTRY)
SEND_CUTS = Counter("ecr_gateway_send_cuts", "Answers whose connection was cut because the "
                    "client did not read them, by route (the route table's id: end-2 blobs, "
                    "end-3 manifests...) and timeout: idle (no progress within "
                    "limits.send_idle_timeout_seconds), whole (a referrers answer not sent "
                    "within limits.referrers_send_timeout_seconds)", ["route", "timeout"],
                    registry=REGISTRY)
PULLTHROUGH_BYTES = Counter("ecr_gateway_pullthrough_bytes", "Blob bytes read from upstream "
                            "registries into ECR", ["registry"], registry=REGISTRY)
# What upstream registries say of their rate limits (Docker Hub's RateLimit-Limit and
# RateLimit-Remaining, "100;w=21600": the pulls allowed per window, and the window).
PULLTHROUGH_RATELIMIT_LIMIT = Gauge("ecr_gateway_pullthrough_ratelimit_limit",
                                    "Requests an upstream registry allows per window, as its "
                                    "last RateLimit-Limit header said", ["registry"],
                                    registry=REGISTRY)
PULLTHROUGH_RATELIMIT_REMAINING = Gauge("ecr_gateway_pullthrough_ratelimit_remaining",
                                        "Requests left in an upstream registry's window, as "
                                        "its last RateLimit-Remaining header said", ["registry"],
                                        registry=REGISTRY)
PULLTHROUGH_RATELIMIT_WINDOW = Gauge("ecr_gateway_pullthrough_ratelimit_window_seconds",
                                     "An upstream registry's rate-limit window (the w= of its "
                                     "RateLimit-Limit header)", ["registry"], registry=REGISTRY)
PULLTHROUGH_THROTTLED = Counter("ecr_gateway_pullthrough_throttled",
                                "429 answers from upstream registries", ["registry"],
                                registry=REGISTRY)
PULLTHROUGH_RETRY_AFTER = Gauge("ecr_gateway_pullthrough_retry_after_seconds",
                                "The Retry-After of an upstream registry's last 429 (seconds; "
                                "an HTTP date counted from now)", ["registry"], registry=REGISTRY)

# How /metrics learns the number of open upload sessions (the store is async).
SESSION_COUNT: web.AppKey[Callable[[], Awaitable[int]]] = web.AppKey("upload_session_count")


# The methods the gateway serves; any other (WebDAV's, or any token aiohttp's pure-Python
# parser accepts) counts as "other", so that callers cannot mint label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe_request(route: str | None, method: str, status: int, seconds: float,
                    bytes_in: int, bytes_out: int) -> None:
    label = route or "other"
    method = method if method in _METHODS else "other"
    REQUESTS.labels(label, method, str(status)).inc()
    REQUEST_SECONDS.labels(label, method).observe(seconds)
    if bytes_in:
        BYTES_IN.labels(label).inc(bytes_in)
    if bytes_out:
        BYTES_OUT.labels(label).inc(bytes_out)


@contextmanager
def upstream_attempt(action: str, attempt: int,
                     throttles: frozenset[str] = frozenset()) -> Iterator[None]:
    """Time one ECR call attempt and count it by outcome (``attempt`` counts from 1); an
    error code in ``throttles`` also counts as a throttle."""
    if attempt > 1:
        UPSTREAM_RETRIES.labels(action).inc()
    started = time.monotonic()
    outcome = "ok"
    try:
        yield
    except BaseException as exc:
        outcome = outcome_of(exc)
        if outcome in throttles:
            UPSTREAM_THROTTLES.labels(action).inc()
        raise
    finally:
        UPSTREAM_RESULTS.labels(action, outcome).inc()
        UPSTREAM_SECONDS.labels(action).observe(time.monotonic() - started)


def outcome_of(exc: BaseException) -> str:
    """ECR's error code for a failed call, else the exception's type name."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(exc).__name__


def cache_event(cache: str, event: str) -> None:
    CACHE.labels(cache, event).inc()


log = logging.getLogger(__name__)


async def metrics_handler(request: web.Request) -> web.StreamResponse:
    count = request.app.get(SESSION_COUNT)
    if count is not None:
        try:
            UPLOAD_SESSIONS.set(await count())
        except Exception as exc:  # a store that is down must not hide the other metrics
            log.warning("cannot count upload sessions: %s", type(exc).__name__)
    body = generate_latest(REGISTRY)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


# Refuses a request that may not read the metrics (raises); None: anyone may.
MetricsGuard = Callable[[web.Request], Awaitable[None]]


def add_metrics_route(app: web.Application, guard: MetricsGuard | None = None) -> None:
    if guard is None:
        app.router.add_get("/metrics", metrics_handler)
        return

    async def guarded(request: web.Request) -> web.StreamResponse:
        await guard(request)
        return await metrics_handler(request)

    app.router.add_get("/metrics", guarded)


def metrics_app(main: web.Application) -> web.Application:
    """``/metrics`` alone, for its own listener (``metrics_listen``): reachable only by
    whoever can reach that address, so no credentials are asked."""
    app = web.Application()
    count = main.get(SESSION_COUNT)
    if count is not None:
        app[SESSION_COUNT] = count
    add_metrics_route(app)
    return app
