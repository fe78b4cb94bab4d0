"""Wiring: the aiohttp application that serves the OCI API from an ECR upstream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aiohttp
from aiohttp import web

from ecr_model.private_files import NotPrivate
from gateway.auth import install as install_auth
from gateway.auth.client_keys import CLIENT_KEYS, client_keys
from gateway.auth.forwarded import PROXY_TRUST, ProxyTrust, parse_networks
from gateway.auth.host_names import rebinding_guard
from gateway.backends.ecr import EcrBackend
from gateway.backends.ecr_public import EcrPublicBackend
from gateway.backends.router import BackendRouter, Storage
from gateway.blobcache import BlobCache
from gateway.config import Config, ConfigError, PullThroughConfig
from gateway.disk.direct_io import balloon_reports_free_pages
from gateway.ecr.breaker import CircuitBreaker
from gateway.ecr.clients import ClientFactory, Credentials, Upstream
from gateway.ecr.public import EcrPublic
from gateway.ecr.reachability import Reachability
from gateway.ecr.referrers_budget import ReferrersBudget
from gateway.ecr.retry import RetryPolicy
from gateway.ecr.routing import Router
from gateway.ecr.staging import StagingStore
from gateway.ecr.unfinished import UnfinishedBytes
from gateway.ecr.uploads import ClientBounds, still_open
from gateway.observability.access import access_log
from gateway.observability.drain import IN_FLIGHT_REQUESTS, InFlight
from gateway.observability.metrics import SESSION_COUNT, add_metrics_route
from gateway.observability.tracing import Tracing
from gateway.oci.context import (
    BLOB_CACHE,
    DOWNLOADS,
    FILL_LOCKS,
    HTTP_CLIENT,
    REGISTRY,
    SETTINGS,
    OciSettings,
)
from gateway.oci.download_targets import DownloadTargets
from gateway.oci.errors import OciError
from gateway.oci.limits import (
    DOWNLOAD_SLOTS,
    LIMITS,
    UPLOAD_SLOTS,
    DownloadSlots,
    Limits,
    UploadSlots,
)
from gateway.oci.middleware import Handler, oci_errors
from gateway.oci.peer import add_peer_route
from gateway.oci.request import PULLTHROUGH_EVENTS, UPSTREAM_ACTIONS
from gateway.oci.routes import add_routes
from gateway.oci.sending import SEND_IDLE_TIMEOUT
from gateway.pullthrough.backend import PullThrough
from gateway.pullthrough.budget import SpoolBudget
from gateway.pullthrough.upstream import EXACT_BYTES
from gateway.state import (
    cache_events,
    fill_locks,
    redis_connection,
    session_store,
    staged_peers,
)
from gateway.state.agreement import LiveReplicas, ReplicaAgreement
from gateway.state.connect import RedisConnection
from gateway.state.fills import FillLocks
from gateway.state.peers import StagedPeers
from gateway.state.sessions import SessionStore
from gateway.state.unfinished_shares import UnfinishedShares

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
CLIENTS = web.AppKey("clients", ClientFactory)
SESSIONS = web.AppKey("sessions", SessionStore)
BREAKER = web.AppKey("breaker", CircuitBreaker)
REACHABILITY = web.AppKey("reachability", Reachability)
# The shared Redis (state.backend redis): its health says whether it is taken as down.
SHARED_REDIS = web.AppKey("shared_redis", RedisConnection)
# The backends (REGISTRY may be a wrapper around them): readiness, expiry, notices.
STORAGE = web.AppKey("storage", Storage)


@web.middleware
async def count_upstream_calls(request: web.Request, handler: Handler) -> web.StreamResponse:
    tally: list[str] = []
    filled: list[str] = []
    # The dispatcher hands both lists on in the RequestContext.
    request[UPSTREAM_ACTIONS] = tally
    request[PULLTHROUGH_EVENTS] = filled
    try:
        return await handler(request)
    finally:
        request["upstream_calls"] = len(tally)
        request["pullthrough"] = filled


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    """Ready when the upstream hands this gateway a registry credential and the session
    store answers."""
    storage = request.app[STORAGE]
    config = request.app[CONFIG]
    step = "the ECR upstream is unreachable"
    try:
        # A dead upstream answers at once: known down (circuit open) or not accepting
        # connections, even while a cached token would hide it.
        client = await request.app[CLIENTS].client(
            upstream_factory(config)(config.upstream.region, None))
        endpoint = str(client.meta.endpoint_url)
        if request.app[BREAKER].is_open(endpoint) or \
                not await request.app[REACHABILITY].check(endpoint):
            raise OSError(f"upstream {endpoint} is unreachable")
        step = "no ECR authorization token"
        await storage.authorization_token(config.upstream.region)
        step = "the upload session store is unavailable"
        redis = request.app.get(SHARED_REDIS)
        if redis is not None and not redis.health.up:  # said once, when it went down
            return _unready(step)
        await request.app[SESSIONS].ping()
    except Exception as exc:  # any failure means not ready: which step, not its details
        # The details (addresses, errors) go to the log: anyone may ask /readyz.
        # "(step)": a step's last word followed by a colon reads as a credential's name to the
        # log's redaction ("token: An error occurred" would lose its first word)
        log.warning("not ready (%s): %s", step, str(exc)[:300])
        return _unready(step)
    return web.json_response({"status": "ready"})


def _unready(step: str) -> web.Response:
    return web.json_response({"status": "unavailable", "reason": step},
                             status=503, headers={"Retry-After": "1"})


async def _expire_idle_sessions(app: web.Application) -> None:
    idle = app[CONFIG].uploads.idle_timeout_seconds
    finished = min(app[CONFIG].uploads.finished_timeout_seconds, idle)
    storage = app[STORAGE]
    redis = app.get(SHARED_REDIS)
    # once at start: a spool no session names was left by an earlier process
    await _sweep_step("dropping the spools of finished uploads", storage.drop_orphan_spools())
    while True:
        await asyncio.sleep(min(60.0, max(finished / 4, 1.0)))
        if redis is not None and not redis.health.up:
            continue  # nothing to read the sessions from: said once, when Redis went down
        await _sweep_step("expiring idle upload sessions",
                          storage.expire_idle_uploads(idle, finished))
        # Spools whose sessions went elsewhere (cancelled or expired through another
        # replica, lost with the store), once they have idled as long as a session may.
        await _sweep_step("dropping the spools of finished uploads",
                          storage.drop_orphan_spools(idle))


async def _sweep_step(what: str, step: Awaitable[object]) -> None:
    """One step of the session sweep; one that fails is retried on the next tick. The
    session store unavailable (Redis down, restarting, full) is an expected condition,
    its cause logged by the store already: a warning, not a traceback on every tick."""
    try:
        await step
    except OciError as exc:
        log.warning("%s skipped: %s", what, exc.message)
    except Exception:
        log.exception("%s failed", what)


async def _announce_staged(peers: StagedPeers, staging: StagingStore) -> None:
    await peers.announce_all(await asyncio.to_thread(staging.digests))


def _announcer(fills: FillLocks | None, peers: StagedPeers | None
               ) -> Callable[[str], Awaitable[None]] | None:
    """With replicas: record this one as holding a blob it cached, so that the others'
    first reads stream it from here (gateway/oci/blobs.py) rather than from storage."""
    if fills is None or peers is None:
        return None

    async def announce(digest: str) -> None:
        if peers.self_url:  # known once the server listens
            await fills.record(digest, peers.self_url)

    return announce


def _direct_io(setting: str) -> bool:
    if setting != "auto":
        return setting == "always"
    direct = balloon_reports_free_pages()
    if direct:
        log.info("writing and reading the gateway's own blob files with O_DIRECT: this "
                 "machine's memory balloon reports freed pages to its host "
                 "(blobs.direct_io: auto)")
    return direct


def http_timeouts(config: Config) -> aiohttp.ClientTimeout:
    """No total (a blob may take long), but every wait on the far end is bounded; aiohttp's
    ``connect`` covers waiting for a pooled connection and opening a new one."""
    up = config.upstream
    return aiohttp.ClientTimeout(
        total=None, connect=up.http_pool_timeout_seconds + up.http_connect_timeout_seconds,
        sock_connect=up.http_connect_timeout_seconds, sock_read=up.http_read_timeout_seconds)


def upstream_factory(config: Config) -> Callable[[str, Credentials | None], Upstream]:
    up = config.upstream

    def upstream_for(region: str, caller: Credentials | None = None) -> Upstream:
        """Where ECR calls in ``region`` go, signed as ``caller`` (auth.mode aws: the
        caller's own keys) or else as the gateway's configured identity."""
        if caller is not None:
            return Upstream(region=region, endpoint_url=up.endpoint_url,
                            access_key_id=caller.access_key_id,
                            secret_access_key=caller.secret_access_key,
                            session_token=caller.session_token)
        return Upstream(region=region, endpoint_url=up.endpoint_url,
                        access_key_id=up.access_key_id, secret_access_key=up.secret_access_key,
                        session_token=up.session_token)

    return upstream_for


_T = TypeVar("_T")


def _private_folder(key: str, make: Callable[[], _T], what: str = "blob bytes") -> _T:
    """``make()``, whose folder of ``what`` belongs to another user or is a link: a
    refusal to start naming the setting (ecr_model/private_files.py), not a traceback."""
    try:
        return make()
    except NotPrivate as exc:
        raise ConfigError(key, f"{exc}: {what} there would not be private") from None


def build_app(config: Config, tracing: Tracing | None = None) -> web.Application:
    """The gateway's application; ``tracing`` (from the OTEL_* environment) adds a span per
    request, per ECR call attempt and per outbound HTTP call."""
    # Whose X-Forwarded-* (and traceparent) are believed: the client's address counts for the
    # login rate limiter and the per-client limits, with authentication or without.
    proxy_trust = ProxyTrust(parse_networks(config.trusted_proxies))
    traced = [tracing.middleware(proxy_trust)] if tracing is not None else []
    guard = rebinding_guard(config, proxy_trust)
    guarded = [guard] if guard is not None else []
    app = web.Application(middlewares=[access_log, *traced, oci_errors, *guarded,
                                       count_upstream_calls])
    app[CONFIG] = config
    app[IN_FLIGHT_REQUESTS] = InFlight()
    app[PROXY_TRUST] = proxy_trust
    limits = config.limits
    app[CLIENT_KEYS] = client_keys(config)
    # The embedded emulator listens on a private loopback port: a redirect there would send
    # clients to an address only this host reaches, so its blobs always stream through here.
    blob_mode = "proxy" if config.upstream.mode == "embedded" else config.blobs.mode
    direct_io = _direct_io(config.blobs.direct_io)
    # A tags or catalog request without `n` gets the largest page and a Link to the rest:
    # a repository's tags (1,000 per image) and a registry's repositories have no bound.
    app[SETTINGS] = OciSettings(blob_mode=blob_mode, max_page_size=limits.max_page_size,
                                default_page_size=limits.max_page_size,
                                direct_reads=direct_io,
                                referrers_send_timeout=limits.referrers_send_timeout_seconds)
    app[SEND_IDLE_TIMEOUT] = limits.send_idle_timeout_seconds  # every answer (access.py)
    data = config.data_path
    clients = ClientFactory(max_connections=config.upstream.max_connections,
                            timeout=config.upstream.call_timeout_seconds,
                            connect_timeout=config.upstream.connect_timeout_seconds)
    app[CLIENTS] = clients
    redis = None
    if config.state.backend == "redis":  # one connection: one health for all its users
        redis = app[SHARED_REDIS] = redis_connection(config)
    live = LiveReplicas()  # counted by the replicas' agreement, used by the login limits
    sessions = _private_folder("data_dir", lambda: session_store(config, redis))
    app[SESSIONS] = sessions
    app[SESSION_COUNT] = sessions.count
    staging = _private_folder("data_dir", lambda: StagingStore(
        data / "staging", config.blobs.staging.max_bytes,
        spool_max_age=2 * config.uploads.idle_timeout_seconds,
        spools_max_bytes=config.blobs.staging.spools_max_bytes, direct=direct_io))
    breaker = CircuitBreaker(config.upstream.breaker_failures,
                             config.upstream.breaker_open_seconds)
    app[BREAKER] = breaker
    app[REACHABILITY] = Reachability()
    policy = RetryPolicy(budget_seconds=config.upstream.retry_budget_seconds, breaker=breaker)
    oci_limits = Limits(
        max_manifest_bytes=limits.max_manifest_bytes,
        max_uploads_per_client=limits.max_uploads_per_client,
        max_uploads_total=limits.max_uploads_total, max_open_uploads=limits.max_open_uploads,
        body_idle_timeout=limits.body_idle_timeout_seconds,
        body_timeout=limits.body_timeout_seconds,
        max_downloads_per_client=limits.max_blob_downloads_per_client,
        download_wait=limits.blob_download_wait_seconds)
    app[LIMITS] = oci_limits
    app[UPLOAD_SLOTS] = UploadSlots(oci_limits, sessions.count)
    app[DOWNLOAD_SLOTS] = DownloadSlots(oci_limits)  # proxied reads' HTTP connections
    router = Router.from_config(config)

    def http() -> aiohttp.ClientSession:
        return app[HTTP_CLIENT]

    def client(connector: aiohttp.BaseConnector | None = None) -> aiohttp.ClientSession:
        # auto_decompress off, and identity asked for: bytes pass through exactly as stored.
        return aiohttp.ClientSession(
            connector=connector, auto_decompress=False, headers=EXACT_BYTES,
            timeout=http_timeouts(config),
            trace_configs=[tracing.client_trace_config()] if tracing is not None else None)

    up = config.upstream
    upstream_for = upstream_factory(config)
    public = EcrPublic(clients, upstream_for, policy, http,
                       endpoint_url=up.public_endpoint_url,
                       # the embedded emulator is the ECR Public registry endpoint too
                       registry_url=up.endpoint_url if up.mode == "embedded" else None)
    # Download URLs the gateway fetches lead only where storage's do, or to the origins of
    # the endpoints configured here (the embedded emulator's on loopback).
    downloads = app[DOWNLOADS] = DownloadTargets(
        [up.endpoint_url, up.public_endpoint_url, public.registry_url_default,
         *(route.registry_url for route in config.routes),
         *(mirror.registry_url for mirror in config.mirrors.values())],
        own=http, make=client, private=up.private_downloads)
    events = cache_events(config, redis)
    peers = staged_peers(config, redis)
    shared = (router, clients, upstream_for, sessions, staging, policy, http, config.cache,
              events, peers)
    # One backend per kind of upstream; the router picks one per route or mirror namespace.
    unfinished = UnfinishedBytes(limits.max_abandoned_upload_bytes_per_client,
                                 2 * config.uploads.idle_timeout_seconds)
    # Replicas add up what each counts of a client's unfinished bytes.
    shares = (UnfinishedShares(redis, config.state.key_prefix, unfinished, still_open(sessions))
              if redis is not None and unfinished.limit else None)
    per_client = ClientBounds(limits.max_open_uploads_per_client,
                              limits.max_upload_tail_bytes_per_client, unfinished, shares)
    referrers_budget = ReferrersBudget(limits.max_referrers_bytes)  # both backends' reads
    backends = BackendRouter(router, [
        EcrBackend(*shared, downloads=downloads, upload_bounds=per_client,
                   referrers_budget=referrers_budget),
        EcrPublicBackend(public, *shared, downloads=downloads, upload_bounds=per_client,
                         referrers_budget=referrers_budget)])
    app[STORAGE] = backends
    fills = fill_locks(config, redis)  # one fetch per blob across replicas
    # Mirrors and routes with an upstream registry fill ECR from it on a miss.
    pulls_through = (any(mirror.upstream for mirror in config.mirrors.values())
                     or any(route.upstream for route in config.routes))
    blob_cache = None
    if config.blobs.mode == "proxy" and config.blobs.cache.path:
        cache_path = Path(config.blobs.cache.path)
        blob_cache = app[BLOB_CACHE] = _private_folder("blobs.cache.path", lambda: BlobCache(
            cache_path, config.blobs.cache.max_bytes))
        if fills is not None:
            app[FILL_LOCKS] = fills
    app[REGISTRY] = PullThrough(backends, config.mirrors, client, PullThroughConfig.password,
                                spool_dir=data / "staging" / "tee", fills=fills,
                                routes=config.effective_routes(),
                                spool_budget=SpoolBudget(
                                    config.blobs.staging.pullthrough_max_bytes),
                                blob_cache=blob_cache,
                                announce_cached=_announcer(fills, peers),
                                direct_io=direct_io,
                                ) if pulls_through else backends

    async def resources(app: web.Application) -> AsyncIterator[None]:
        app[HTTP_CLIENT] = client()
        sweeper = asyncio.create_task(_expire_idle_sessions(app))
        # Replicas compare the settings they enforce together (said where they differ).
        agreement = (ReplicaAgreement(redis, config.state.key_prefix, config, live=live)
                     if redis is not None else None)
        comparing = asyncio.create_task(agreement.run()) if agreement is not None else None
        sharing = asyncio.create_task(shares.run()) if shares is not None else None
        announcing: set[asyncio.Task[None]] = set()

        def listening_again() -> None:
            backends.flush_caches()
            if peers is not None:  # Redis may have restarted empty: tell it what is staged here
                task = asyncio.create_task(_announce_staged(peers, staging))
                announcing.add(task)
                task.add_done_callback(announcing.discard)

        events.listen(backends.apply_notice, listening_again)
        yield
        sweeper.cancel()
        if agreement is not None and comparing is not None:
            comparing.cancel()
            await agreement.close()
        if shares is not None and sharing is not None:
            sharing.cancel()
            await shares.close()
        await events.close()
        if peers is not None:
            await peers.close()
        backend = app[REGISTRY]
        if isinstance(backend, PullThrough):
            await backend.close()
        if fills is not None:
            await fills.close()
        await app[HTTP_CLIENT].close()
        await downloads.close()
        await clients.close()
        await sessions.close()
        if redis is not None:
            await redis.health.close()

    app.cleanup_ctx.append(resources)
    add_routes(app)
    if peers is not None:
        add_peer_route(app, backends, peers)
    authenticator = _private_folder(
        "data_dir", lambda: install_auth(app, config, clients, policy, router, redis,
                                              live),
        "the token-signing key")
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if config.metrics_listen is None:  # else served on its own listener (gateway/serve.py)
        add_metrics_route(app, authenticator.require_login if authenticator else None)
    return app
