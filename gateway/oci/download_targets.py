"""Where a blob's download URL may lead the gateway when it fetches the bytes itself (proxy
mode, a mount's copy, an image's config for catalog data).

ECR's GetDownloadUrlForLayer and ECR Public's blob redirect hand out presigned S3 or
CloudFront URLs: https, on globally routable addresses. A download URL, and every redirect
its host answers, is followed there, or to the origin (scheme, host, port) of an endpoint the
configuration names (the ECR API, ECR Public's API, a registry endpoint of ECR Public: an
emulator on loopback, a VPC endpoint), whatever its address. Anything else is refused before
a connection is made: an endpoint that is hostile or taken over (a route's ``registry_url``,
an emulator) could otherwise point the gateway's GETs at the metadata service, at loopback
services or into its network. The address rules are the pull-through's redirect rules
(:mod:`ecr_model.redirect_targets`): names judged by what they resolve to when the connection
is made, private networks only with ``upstream.private_downloads`` (S3 reached through an
interface VPC endpoint), loopback, link-local and metadata addresses never.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import aiohttp
from yarl import URL

from ecr_model.redirect_targets import (
    MAX_REDIRECTS,
    Refusal,
    TargetResolver,
    host_refusal,
    next_hop,
    origin,
    resolver_refusal,
)
from gateway.observability.logs import Sparing, unsaid
from gateway.oci.errors import UNAVAILABLE, UPSTREAM_ERROR, OciError

log = logging.getLogger(__name__)

_REFUSED: dict[Refusal, str] = {
    "private": "a private address (upstream.private_downloads allows private networks)",
    "internal": "an internal address",
}

# A hostile endpoint answers every read so: one line a minute, the metrics count them all.
_WARNINGS = Sparing()


class DownloadRefused(Exception):
    """A download URL, or a redirect from one, leads where the gateway does not go. The
    message names why and ``host`` the host, never the URL (its query is a credential)."""

    def __init__(self, why: str, host: str) -> None:
        super().__init__(why)
        self.host = host


class DownloadTargets:
    """GETs of download URLs: to ``endpoints``' origins through ``own`` (the gateway's
    client), elsewhere only over https to allowed addresses through a client ``make`` makes
    with a connector whose resolver refuses the others (made when first needed, closed by
    :meth:`close`); redirects followed here under the same rule."""

    def __init__(self, endpoints: Iterable[str | None], *,
                 own: Callable[[], aiohttp.ClientSession],
                 make: Callable[[aiohttp.BaseConnector], aiohttp.ClientSession],
                 private: bool = False) -> None:
        self._trusted = {origin(URL(e)) for e in endpoints if e}
        self._own, self._make, self._private = own, make, private
        self._session: aiohttp.ClientSession | None = None

    def _guarded(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self._make(aiohttp.TCPConnector(
                resolver=TargetResolver(private=self._private)))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def refusal(self, url: URL) -> str | None:
        """Why ``url`` is not fetched (None: it is, if its host's addresses are allowed)."""
        if origin(url) in self._trusted:
            return None
        if url.scheme != "https":
            return "leads to another host than the configured endpoints over plain http"
        if not url.host or url.user or url.password:
            return "has no host, or credentials in it"
        why = host_refusal(url.host, self._private)
        return None if why is None else f"leads to {_REFUSED[why]}"

    async def get(self, url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """The response at the end of the redirects from ``url`` (the caller releases it).
        DownloadRefused for a URL or a hop not followed; aiohttp's errors as they come."""
        target = URL(url)
        for hop in range(MAX_REDIRECTS + 1):
            what = "a redirect from the download URL" if hop else "the download URL"
            host = target.host or ""
            refused = self.refusal(target)
            if refused is not None:
                raise DownloadRefused(f"{what} {refused} (not followed)", host)
            session = self._own() if origin(target) in self._trusted else self._guarded()
            try:
                response = await session.get(target, headers=headers, allow_redirects=False)
            except aiohttp.ClientConnectorError as exc:
                if (why := resolver_refusal(exc)) is not None:
                    raise DownloadRefused(f"{what} leads to a host with {_REFUSED[why]} "
                                          "(not followed)", host) from None
                raise
            try:
                hop_to = next_hop(response)
            except ValueError:
                raise DownloadRefused(f"{what} redirects without a usable Location",
                                      host) from None
            if hop_to is None:
                return response
            target = hop_to
        raise DownloadRefused(f"more than {MAX_REDIRECTS} redirects from the download URL",
                              target.host or "")


def download_refused(exc: DownloadRefused) -> OciError:
    """The client's answer to a refused download (502: storage's answer was unusable), and
    the operator's warning, both naming the host alone."""
    left = _WARNINGS.due("download")
    if left is not None:
        log.warning("blob download from %s refused: %s%s", exc.host or "no host", exc,
                    unsaid(left))
    return OciError(UPSTREAM_ERROR, {"download_host": exc.host},
                    message=f"blob storage answered with a download URL not followed: {exc}")


def storage_unreachable(exc: BaseException) -> OciError:
    """The client's answer when blob storage cannot be reached or stays silent past the
    client's timeouts: 503, to be retried (the error's type only: the URL is a credential)."""
    return OciError(UNAVAILABLE, {"blob_download": type(exc).__name__},
                    message="the blob store did not answer in time",
                    headers={"Retry-After": "1"})

