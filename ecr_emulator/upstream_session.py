"""The HTTP session of one pull through cache call: GETs to the upstream registry and its
token realm, their redirects followed here (never by aiohttp) as ECR's pull through cache
reaches the internet.

A request on the upstream's own origin (scheme, host, port) is made as any. One on another
origin (a registry's CDN, a well-known registry's realm host) goes only over https, and only to
addresses :mod:`ecr_model.redirect_targets` allows: globally routable ones (names judged when
the connection is made). An upstream on loopback (a test's registry) may lead to loopback,
over http too. A redirect to another origin than the request's drops the Authorization
header (as aiohttp does). At most :data:`MAX_REDIRECTS` hops.
"""

from __future__ import annotations

import aiohttp
from yarl import URL

from ecr_model.hosts import is_loopback
from ecr_model.redirect_targets import (
    MAX_REDIRECTS,
    TargetResolver,
    host_refusal,
    next_hop,
    origin,
    resolver_refusal,
)


class RedirectRefused(Exception):
    """A redirect the pull through cache does not follow (the reason, never the URL)."""


class UpstreamSession:
    def __init__(self, base: str, timeout: aiohttp.ClientTimeout) -> None:
        try:
            own = URL(base)
            self._origin: tuple[str, str, int | None] | None = origin(own)
        except ValueError:  # a rule stored before check_registry_url: get() raises it
            own, self._origin = URL(), None
        self._loopback = is_loopback(own.host or "")
        self._timeout = timeout
        self._own = aiohttp.ClientSession(timeout=timeout)
        self._foreign: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> UpstreamSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._own.close()
        if self._foreign is not None:
            await self._foreign.close()

    async def get(self, url: str | URL, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """The response at the end of the redirects from ``url`` (the caller releases it):
        the Authorization header goes only to ``url``'s origin. RedirectRefused for a hop not
        followed (``url`` itself too, when it is not the upstream's: a token realm);
        aiohttp's errors as they come."""
        target = URL(url)
        first = origin(target)
        for hop in range(MAX_REDIRECTS + 1):
            what, refused_as = ("a redirect", "not followed") if hop else ("a request", "not made")
            if origin(target) == self._origin:
                session = self._own
            else:
                refused = self._refusal(target)
                if refused is not None:
                    raise RedirectRefused(f"{what} {refused} ({refused_as})")
                session = self._foreign_session()
            sent = headers if origin(target) == first else {
                k: v for k, v in headers.items() if k.lower() != "authorization"}
            try:
                response = await session.get(target, headers=sent, allow_redirects=False)
            except aiohttp.ClientConnectorError as exc:
                if (why := resolver_refusal(exc)) is not None:
                    raise RedirectRefused(f"{what} to a host with a {why} "
                                          f"address ({refused_as})") from None
                raise
            try:
                hop_to = next_hop(response)
            except ValueError:
                raise RedirectRefused("a redirect without a usable Location "
                                      "(not followed)") from None
            if hop_to is None:
                return response
            target = hop_to
        raise RedirectRefused(f"more than {MAX_REDIRECTS} redirects (not followed)")

    def _refusal(self, target: URL) -> str | None:
        """Why a request to ``target``, another origin than the upstream's, is not made
        (None: it is, if its host's addresses turn out to be allowed)."""
        host = target.host or ""
        if not host or target.user or target.password:
            return "to a URL without a host, or with credentials"
        loopback_hop = self._loopback and is_loopback(host)
        if target.scheme != "https" and not (target.scheme == "http" and loopback_hop):
            return "to another origin over plain http"
        why = host_refusal(host, loopback=self._loopback)
        return None if why is None else f"to a {why} address"

    def _foreign_session(self) -> aiohttp.ClientSession:
        if self._foreign is None:
            self._foreign = aiohttp.ClientSession(timeout=self._timeout, connector=(
                aiohttp.TCPConnector(resolver=TargetResolver(loopback=self._loopback))))
        return self._foreign



