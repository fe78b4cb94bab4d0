"""Which upstream registry, if any, fills a request's repository: a mirror's (the ``ns`` a
mirror client names) or a route's (the longest prefix matching the name, as ECR routing
picks it), and the name to ask that registry for."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from cachetools import TTLCache

from gateway.config import MirrorConfig, PullThroughConfig, RouteConfig
from gateway.ecr.routing import Router
from gateway.observability.logs import Sparing
from gateway.pullthrough.creations import Creations
from gateway.pullthrough.transfers import Transfers
from gateway.pullthrough.upstream import (
    REQUESTS_AT_ONCE,
    ForeignSession,
    OciUpstream,
    OwnPool,
    registry_host,
)


class Source:
    """One upstream registry and what this process knows of its tags."""

    def __init__(self, key: str, registry: str, settings: PullThroughConfig,
                 upstream: OciUpstream, prefix: str = "") -> None:
        self.host = key  # identifies the source among this gateway's (mirror host, route)
        self.registry = registry  # metric label and log name: a host name, never a URL
        self.settings = settings
        self.upstream = upstream
        self._prefix = prefix
        self.warnings = Sparing()  # each kind of warning about this upstream once a minute
        self.transfers = Transfers(settings.max_blob_transfers)  # blob bodies in flight
        self.creations = Creations(settings.max_new_repositories_per_hour)  # its fills' only
        # A route's repositories also hold what clients pushed: a tag the upstream does not
        # know is theirs, served from ECR (a mirror's tags are only ever the upstream's).
        self.own_tags = key.startswith("route:")
        # (name, tag) → the digest the upstream gave it, trusted until the TTL runs out.
        self.checked: TTLCache[tuple[str, str], str] = TTLCache(
            maxsize=100_000, ttl=settings.tag_ttl_seconds or 1e-9)

    def upstream_name(self, name: str) -> str:
        """The upstream's name for the client's ``name`` (a route's prefix taken off)."""
        if not self._prefix:
            return name
        return name[len(self._prefix) + 1:]


class Sources:
    def __init__(self, mirrors: dict[str, MirrorConfig], routes: list[RouteConfig],
                 make: Callable[[aiohttp.BaseConnector], aiohttp.ClientSession],
                 password_of: Callable[[PullThroughConfig], str | None]) -> None:
        # Every upstream's redirects to other origins (their CDNs) go through one session,
        # or through the one allowing private networks for upstreams that say so.
        self._foreign = {private: ForeignSession(private) for private in (False, True)}
        self._pools: list[OwnPool] = []

        def client(settings: PullThroughConfig, registry: str) -> OciUpstream:
            private = settings.private_redirects
            # Each upstream has connections of its own, enough for its manifest turns and
            # blob transfers each with a token request: stalled, it holds only those.
            pool = OwnPool(make, 2 * (REQUESTS_AT_ONCE + settings.max_blob_transfers))
            self._pools.append(pool)
            return OciUpstream(settings.url, pool, settings.username, password_of(settings),
                               timeout=settings.timeout_seconds, registry=registry,
                               realm_hosts=tuple(settings.token_realm_hosts),
                               foreign=self._foreign[private], private_redirects=private,
                               blob_grace=settings.blob_grace_seconds,
                               blob_min_rate=settings.blob_min_rate)

        # As ECR routing has it: with mirrors configured, a request naming ns is a mirror's.
        self._by_ns = bool(mirrors)
        self._mirrors = {host: Source(host, host, m.upstream, client(m.upstream, host))
                         for host, m in mirrors.items() if m.upstream is not None}
        self._router = Router(routes, "") if any(r.upstream for r in routes) else None
        self._routes: dict[int, Source] = {}
        for route in routes:
            if route.upstream is not None:
                registry = registry_host(route.upstream.url)
                self._routes[id(route)] = Source(f"route:{route.prefix}", registry,
                                                 route.upstream,
                                                 client(route.upstream, registry), route.prefix)

    async def close(self) -> None:
        for foreign in self._foreign.values():
            await foreign.close()
        for pool in self._pools:
            await pool.close()

    def __bool__(self) -> bool:
        return bool(self._mirrors or self._routes)

    def find(self, ns: str | None, name: str) -> Source | None:
        if ns is not None and self._by_ns:
            return self._mirrors.get(ns)
        if self._router is None:
            return None
        target = self._router.resolve(name)
        if target is None or target.route.prefix == name:  # the prefix itself names nothing
            return None
        return self._routes.get(id(target.route))
