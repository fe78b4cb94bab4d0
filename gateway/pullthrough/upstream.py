"""A client of any OCI registry, for pull-through: manifests and blobs by name, with the
docker token flow (anonymous or with credentials) or Basic auth, whichever the registry's
challenge asks for.

A challenge's token realm is asked only when it is the upstream's own host (on loopback its
own scheme and port too: every local service shares that host), the known realm of a
well-known registry (``registry-1.docker.io`` → ``auth.docker.io``) or one the
configuration lists (``token_realm_hosts``), over https (http only on loopback): an upstream
never points the gateway's credentials, or its requests, at another host. A shared domain is
not enough: ``a.azurecr.io`` and ``b.azurecr.io`` belong to different tenants. The realm's
answer is read bounded (a token is a few KiB at most) and its redirects are not followed.

Redirects are followed here, never by aiohttp, and at most :data:`MAX_REDIRECTS` hops: to the
upstream's own origin (scheme, host, port) as any request; to another origin only over https,
without the Authorization header, and only to globally routable addresses (private networks
too with the upstream's ``private_redirects``; never loopback, link-local or a cloud metadata
service: see :mod:`ecr_model.redirect_targets`), names judged when the connection is made.
Blob downloads from a registry's CDN (Docker Hub, ghcr) are such redirects; a hop to an
internal address is an :class:`UpstreamError`, as an unreachable upstream is.

Manifests, tokens and tag pages are read within a deadline (a few times the read timeout),
a tag list's pages together within a longer one, and at most :data:`REQUESTS_AT_ONCE`
manifest or tag page requests are in flight to one upstream: an upstream that sends a byte
now and then cannot hold a request, or the connections of others, for ever. Blobs, which may
be large, have no deadline: after a grace period their bytes must keep up with a minimum
average rate (:mod:`gateway.pullthrough.pace`), or the transfer is cut off as the
upstream's failure (:class:`UpstreamTooSlow`).

Every manifest is checked against its digest before it is returned (a digest reference must
match the bytes; a ``Docker-Content-Digest`` header must too); blobs are returned as streams
for the caller to verify as the bytes pass. The upstream's refusals become
:class:`UpstreamError` with the HTTP status, so the caller tells "not there" (404), "not
given" (400, or 401/403 once the auth flow ran: Docker Hub answers a name it does not hold
so), "the configured credentials are wrong" (the realm, or a Basic upstream, refused them)
and "not now" (429, 5xx, unreachable) apart. Credentials never reach a log line or an
error message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import re
import time
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import aiohttp
from cachetools import LRUCache
from yarl import URL

from ecr_model.hosts import is_loopback
from ecr_model.redirect_targets import (
    MAX_REDIRECTS,
    REDIRECTS,
    Refusal,
    TargetResolver,
    host_refusal,
    next_hop,
    origin,
    resolver_refusal,
)
from ecr_model.token_realms import realm_allowed
from gateway.config.errors import ConfigError
from gateway.ecr.singleflight import SingleFlight
from gateway.oci.digests import content_digest, is_digest, sha256_digest
from gateway.oci.names import is_tag
from gateway.pullthrough import pace, ratelimit
from gateway.pullthrough.pace import RateFloor

if TYPE_CHECKING:
    from gateway.config import PullThroughConfig

log = logging.getLogger(__name__)

# Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="..."
_PARAM = re.compile(r'(\w+)="([^"]*)"')
# The largest manifest read from an upstream (ECR's own limit): a larger one is refused
# before it is held whole in memory.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# The largest page of a tag list (a thousand tags take some tens of KiB).
MAX_TAG_PAGE_BYTES = 16 * 1024 * 1024
# A tag list's pages and tags: an upstream whose pages never end (a new ``last`` each time)
# or that lists millions of names is cut off (Quay pages 100 tags at a time: a thousand
# pages are all of a repository's hundred thousand).
MAX_TAG_PAGES = 1000
MAX_TAGS = 100_000
# Digest algorithms a manifest is checked against.
_CHECKED = ("sha256", "sha512")
# A token realm's answer, and the token in it (registries' tokens take 1-3 KiB).
MAX_TOKEN_ANSWER_BYTES = 64 * 1024
MAX_TOKEN_CHARS = 8 * 1024
# Scopes (repository names) whose Authorization is remembered: at most this many tokens of
# MAX_TOKEN_CHARS each, however many names clients ask for.
AUTH_SCOPES_KEPT = 4096
# Sent with every request to an upstream: the bytes must come as stored, since digests are
# of them and sessions do not decompress (aiohttp offers gzip and deflate otherwise, and a
# registry behind a compressing proxy takes it up for manifests and tag pages).
EXACT_BYTES = {"Accept-Encoding": "identity"}
# A manifest's, token's or tag page's whole answer takes at most this many read timeouts.
DEADLINE_TIMEOUTS = 4
# A tag list's pages together take at most this many (10 minutes at the default 30 seconds;
# a registry lists a hundred thousand tags in a few): pages each just within their deadline
# would otherwise hold the listing for MAX_TAG_PAGES of them.
TAG_LIST_DEADLINE_TIMEOUTS = 20
# Manifest, tag check and tag page requests to one upstream in flight at once; more wait
# their turn within their deadline: an upstream that holds its answers must not take all of
# its connection pool (OwnPool), which other tenants' pulls from it share (its blob bodies
# are bounded apart, transfers.py).
REQUESTS_AT_ONCE = 16
# What a bearer token or a Basic value may be made of (no spaces, no line breaks).
_TOKEN = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True)
class TagList:
    """A repository's tags as its registry lists them: the valid ones, each once, and how
    many names were no OCI tag (never kept: a name of megabytes on each page would add up)."""

    tags: list[str]
    invalid: int


@dataclass(frozen=True)
class UpstreamManifest:
    body: bytes
    media_type: str
    digest: str


class UpstreamError(Exception):
    """The upstream registry refused or could not be reached (``status`` 0).

    ``credentials_refused``: a 401 answered the gateway's own configured credentials (sent
    as Basic to the registry or to its token realm): they are wrong, whatever was asked.
    ``redirected``: the answer came from another origin a redirect led to (a CDN), not
    from the registry itself."""

    def __init__(self, status: int, what: str, retry_after: str | None = None, *,
                 credentials_refused: bool = False, redirected: bool = False,
                 tls_failure: str | None = None) -> None:
        answered = "refused the configured credentials with" if credentials_refused \
            else "answered"
        super().__init__(f"upstream {answered} {status or 'nothing'} for {what}"
                         + (f" (TLS: {tls_failure})" if tls_failure else ""))
        self.status = status
        self.what = what
        self.retry_after = retry_after
        self.credentials_refused = credentials_refused
        self.redirected = redirected
        # Reached, but the TLS handshake failed (an http-only registry named https, or a
        # certificate not trusted): asking again will not help.
        self.tls_failure = tls_failure

    @property
    def missing(self) -> bool:
        return self.status == 404

    @property
    def refused(self) -> bool:
        """The registry will not give it: a name it cannot hold (400), or a 401/403 that
        persists after the auth flow without credentials, or with a token its realm granted
        (Docker Hub's answer for a repository that does not exist). Either it does not hold
        it or it needs credentials the gateway does not have: not the client's to retry."""
        return (self.status in (400, 401, 403) and not self.credentials_refused
                and not self.redirected)

    @property
    def unavailable(self) -> bool:
        """Down, slow, overloaded or rate-limiting: a cached copy may stand in."""
        return self.status in (0, 408, 429) or self.status >= 500


class UpstreamTooSlow(UpstreamError):
    """A blob's body fell below the minimum average rate after its grace period."""

    def __init__(self, what: str, floor: RateFloor) -> None:
        super().__init__(0, f"{what}: slower than {floor.min_rate:g} bytes a second after "
                            f"{floor.grace:g} seconds ({floor.received} bytes in "
                            f"{floor.elapsed:.0f} seconds)")


class OciUpstream:
    def __init__(self, url: str, http: Callable[[], aiohttp.ClientSession],
                 username: str | None = None, password: str | None = None,
                 timeout: float = 30.0, registry: str | None = None,
                 realm_hosts: tuple[str, ...] = (),
                 foreign: Callable[[], aiohttp.ClientSession] | None = None,
                 private_redirects: bool = False,
                 blob_grace: float = pace.GRACE_SECONDS,
                 blob_min_rate: float = pace.MIN_RATE) -> None:
        self.url = url.rstrip("/")
        self._origin = origin(URL(self.url))
        self._realm_hosts = realm_hosts
        # The metrics' label: the host name (never the URL, which may carry credentials).
        self.registry = registry or registry_host(url)
        self._http = http
        # Redirect hops to another origin go through this one (its resolver refuses what
        # private_redirects does not allow, as it must); its owner closes it (else this
        # client does, in close()).
        self.private_redirects = private_redirects
        self._own_foreign: ForeignSession | None = None
        if foreign is None:
            foreign = self._own_foreign = ForeignSession(private_redirects)
        self._foreign = foreign
        self._basic = (base64.b64encode(f"{username}:{password or ''}".encode()).decode()
                       if username else None)
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout,
                                              sock_read=timeout)
        self._deadline = DEADLINE_TIMEOUTS * timeout if timeout > 0 else None
        self._listing_deadline = TAG_LIST_DEADLINE_TIMEOUTS * timeout if timeout > 0 else None
        # A blob's body: bytes a second it must keep up with after the grace (0: no floor).
        self._blob_grace, self._blob_min_rate = blob_grace, blob_min_rate
        # The Authorization value for each scope (a bearer token until shortly before it
        # expires, or Basic), learned from the registry's challenges. A scope is a
        # repository name, which clients choose: the least recently used are forgotten
        # (and asked for again) beyond AUTH_SCOPES_KEPT.
        self._auth: LRUCache[str, tuple[str, float]] = LRUCache(AUTH_SCOPES_KEPT)
        self._token_fetches: SingleFlight[None] = SingleFlight("upstream_token")
        # Not the token requests: a request holding a turn may need one.
        self._turns = asyncio.Semaphore(REQUESTS_AT_ONCE)

    @property
    def has_credentials(self) -> bool:
        return self._basic is not None

    async def close(self) -> None:
        """Close the session for other origins, if this client made it."""
        if self._own_foreign is not None:
            await self._own_foreign.close()

    # -- requests ---------------------------------------------------------------------------

    async def _request(self, method: str, path: str, scope: str, what: str,
                       headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        """One request, authenticated as the registry's challenge asks (at most one retry
        after a 401: a token the registry no longer takes is asked for again). The caller
        releases the response."""
        wanted = dict(headers or {})
        for attempt in range(2):
            auth = self._authorization(scope)
            response = await self._follow(method, URL(f"{self.url}{path}"), wanted, auth, what)
            ratelimit.observe(self.registry, response.status, response.headers)
            own = origin(response.url) == self._origin
            if response.status == 401 and attempt == 0 and own:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.release()
                await self._answer(challenge, scope, what, auth)
                continue
            if response.status >= 400:
                retry_after = response.headers.get("Retry-After")
                response.release()
                # A 401 to the gateway's own Basic credentials: they are wrong. A 401 to a
                # bearer token says only that the token lacks the scope.
                raise UpstreamError(response.status, what, retry_after,
                                    credentials_refused=(own and response.status == 401
                                                         and _is_basic(auth)),
                                    redirected=not own)
            return response
        raise UpstreamError(401, what, credentials_refused=_is_basic(auth))

    async def _follow(self, method: str, url: URL, headers: dict[str, str],
                      auth: str | None, what: str) -> aiohttp.ClientResponse:
        """The response at the end of the redirects from ``url``: hops on the upstream's
        origin carry ``auth``; a hop to another origin is https to an address the redirect
        policy allows, without it; at most MAX_REDIRECTS of them."""
        for _ in range(MAX_REDIRECTS + 1):
            if origin(url) == self._origin:
                session = self._http()
                sent = {**headers, **({"Authorization": auth} if auth else {})}
            else:
                refused = _foreign_refusal(url, self.private_redirects)
                if refused:
                    raise UpstreamError(502, f"{what}: a redirect {refused}")
                session, sent = self._foreign(), dict(headers)
            try:
                response = await session.request(method, url, headers=sent,
                                                 timeout=self._timeout, allow_redirects=False)
            except aiohttp.ClientSSLError as exc:
                raise UpstreamError(0, what, tls_failure=_tls_reason(exc)) from exc
            except aiohttp.ClientConnectorError as exc:
                if (why := resolver_refusal(exc)) is not None:
                    raise UpstreamError(502, f"{what}: a redirect to a host with "
                                             f"{_REFUSED[why]}") from exc
                raise UpstreamError(0, what) from exc
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise UpstreamError(0, what) from exc
            try:
                hop_to = next_hop(response)
            except ValueError:
                raise UpstreamError(502, f"{what}: a redirect without a usable "
                                         "Location") from None
            if hop_to is None:
                return response
            url = hop_to
        raise UpstreamError(502, f"{what}: more than {MAX_REDIRECTS} redirects")

    @contextlib.asynccontextmanager
    async def _within_deadline(self, what: str) -> AsyncIterator[None]:
        """The whole of what runs inside within DEADLINE_TIMEOUTS read timeouts; a body
        that stops or breaks off is the upstream's failure too."""
        deadline = asyncio.timeout(self._deadline)
        try:
            async with deadline:
                yield
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if deadline.expired():
                raise UpstreamError(0, f"{what}: no whole answer within "
                                       f"{self._deadline:g} seconds") from exc
            raise UpstreamError(0, what) from exc

    def _authorization(self, scope: str) -> str | None:
        held = self._auth.get(scope)
        return held[0] if held is not None and held[1] > time.monotonic() else None

    async def _answer(self, challenge: str, scope: str, what: str,
                      refused: str | None = None) -> None:
        """Get what a 401's challenge asks for: a bearer token for ``scope``, or Basic.
        ``refused``, the Authorization the 401 answered, is never kept."""
        held = self._auth.get(scope)
        if refused is not None and held is not None and held[0] == refused:
            del self._auth[scope]  # rotated or revoked: ask for another
        kind, _, rest = challenge.partition(" ")
        if kind.lower() == "basic" and self._basic is not None:
            self._auth[scope] = (f"Basic {self._basic}", float("inf"))
            return
        if kind.lower() != "bearer":
            raise UpstreamError(401, what)
        params = dict(_PARAM.findall(rest))
        realm = params.get("realm")
        if not realm:
            raise UpstreamError(502, f"{what}: a Bearer challenge without a realm")
        if not realm_allowed(realm, self.url, self._realm_hosts):
            log.warning("upstream %s names the token realm host %s, not its own: not asked "
                        "(list it in token_realm_hosts if it is the registry's)", self.registry,
                        registry_host(realm))
            raise UpstreamError(502, f"{what}: a token realm on another host")
        if self._authorization(scope) not in (None, refused):
            return  # another request got a fresh one meanwhile
        # Many pulls of one image wait for one token.
        await self._token_fetches.do(scope, partial(self._token, realm, scope,
                                                    params.get("service")))

    async def _token(self, realm: str, scope: str, service: str | None) -> None:
        query = {"scope": scope}
        if service:
            query["service"] = service
        headers = {"Authorization": f"Basic {self._basic}"} if self._basic else {}
        asked = f"a token for {scope}"
        async with self._within_deadline(asked):
            try:
                # The realm's redirects are not followed: they could lead anywhere.
                async with self._http().get(realm, params=query, headers=headers,
                                            timeout=self._timeout,
                                            allow_redirects=False) as response:
                    if response.status in REDIRECTS:
                        raise UpstreamError(502, f"{asked}: the realm redirects "
                                                 "(not followed)")
                    if response.status != 200:
                        raise _realm_refusal(response.status, asked, self._basic is not None)
                    body = await read_bounded(response, MAX_TOKEN_ANSWER_BYTES, asked)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                raise UpstreamError(0, asked) from exc
        token, lifetime = token_answer(body, asked)
        self._auth[scope] = (f"Bearer {token}", time.monotonic() + max(lifetime - 10, 1))

    # -- manifests and blobs ----------------------------------------------------------------

    async def manifest(self, name: str, reference: str,
                       accept: tuple[str, ...]) -> UpstreamManifest:
        what = f"manifest {name}:{reference}"
        async with self._within_deadline(what), self._turns:
            response = await self._request("GET", f"/v2/{name}/manifests/{reference}",
                                           _scope(name), what, {"Accept": ", ".join(accept)})
            async with response:
                body = await read_bounded(response, MAX_MANIFEST_BYTES, what)
                media_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
                claimed = response.headers.get("Docker-Content-Digest")
        if is_digest(reference) and not _matches(reference, body):
            raise UpstreamError(502, f"{what}: the bytes do not match the digest")
        if claimed and claimed.partition(":")[0] in _CHECKED and not _matches(claimed, body):
            raise UpstreamError(502, f"{what}: the bytes do not match Docker-Content-Digest")
        return UpstreamManifest(body, media_type, sha256_digest(body))

    async def manifest_digest(self, name: str, tag: str, accept: tuple[str, ...]) -> str | None:
        """What ``tag`` points to now (one HEAD), or None when the registry does not say."""
        what = f"manifest {name}:{tag}"
        async with self._within_deadline(what), self._turns:
            response = await self._request("HEAD", f"/v2/{name}/manifests/{tag}", _scope(name),
                                           what, {"Accept": ", ".join(accept)})
            async with response:
                return response.headers.get("Docker-Content-Digest")

    async def blob(self, name: str, digest: str, size: int | None = None
                   ) -> tuple[int | None, AsyncGenerator[bytes, None]]:
        """The blob's size (``size``, what a manifest naming it says, else the registry's
        word if any) and its bytes, unverified but never more than ``size``."""
        what = f"blob {name}@{digest}"
        async with self._within_deadline(what):  # up to the headers; the body has no deadline
            response = await self._request("GET", f"/v2/{name}/blobs/{digest}", _scope(name),
                                           what)
        if size is not None and response.content_length not in (None, size):
            response.release()
            raise UpstreamError(502, f"{what}: {response.content_length} bytes where its "
                                     f"manifest says {size}")
        return (response.content_length if size is None else size), \
            _pieces(response, size, what, self._blob_grace, self._blob_min_rate)

    async def tags(self, name: str) -> TagList:
        """Every tag of ``name``, each once (following the registry's ``Link`` pages on its
        own origin): at most MAX_TAGS of them in at most MAX_TAG_PAGES pages, all within
        TAG_LIST_DEADLINE_TIMEOUTS read timeouts. Only valid OCI tags are kept (a name that
        is none is counted): what is held stays within MAX_TAGS tags of at most 128
        characters, whatever the pages hold."""
        listing = asyncio.timeout(self._listing_deadline)
        try:
            async with listing:
                return await self._listed(name)
        except TimeoutError as exc:
            if listing.expired():
                raise UpstreamError(0, f"the tags of {name}: not listed whole within "
                                       f"{self._listing_deadline:g} seconds") from exc
            raise

    async def _listed(self, name: str) -> TagList:
        tags: dict[str, None] = {}
        invalid = 0
        path: str | None = f"/v2/{name}/tags/list?n=1000"
        asked: set[str] = set()
        what = f"the tags of {name}"
        while path:
            if path in asked:  # an upstream whose pages lead back would never end
                raise UpstreamError(502, f"{what}: the pages loop")
            if len(asked) == MAX_TAG_PAGES:  # nor one whose pages lead on for ever
                raise UpstreamError(502, f"{what}: more than {MAX_TAG_PAGES} pages")
            asked.add(path)
            valid, refused, path = await self._tag_page(name, path, what)
            tags.update(dict.fromkeys(valid))
            invalid += refused
            if len(tags) > MAX_TAGS:
                raise UpstreamError(502, f"{what}: more than {MAX_TAGS} tags")
        return TagList(list(tags), invalid)

    async def _tag_page(self, name: str, path: str, what: str
                        ) -> tuple[list[str], int, str | None]:
        """One page's valid tags, how many names on it are none, and the next page. A page
        of up to MAX_TAG_PAGE_BYTES lives only in here, so the next one is read without it."""
        async with self._within_deadline(what), self._turns:
            response = await self._request("GET", path, _scope(name), what)
            async with response:
                body = await read_bounded(response, MAX_TAG_PAGE_BYTES, what)
                following = _next_page(response.headers.get("Link"))
        try:
            page = json.loads(body)
        except (ValueError, RecursionError) as exc:  # nested past the parser's depth
            raise UpstreamError(502, f"{what}: not JSON") from exc
        listed = page.get("tags") if isinstance(page, dict) else None
        if listed is not None and not isinstance(listed, list):
            raise UpstreamError(502, f"{what}: the tags are not a list")
        valid = [tag for tag in listed or [] if isinstance(tag, str) and is_tag(tag)]
        return valid, len(listed or []) - len(valid), following


def registry_host(url: str) -> str:
    """``host[:port]`` of a registry URL, without any user information."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "unknown"
    return f"{host}:{parts.port}" if parts.port else host



# How a refused address is named to clients: a private one names the setting that allows it.
_REFUSED: dict[Refusal, str] = {
    "private": "a private address (not followed: the upstream's private_redirects setting "
               "allows private networks)",
    "internal": "an internal address (not followed)",
}


def _foreign_refusal(url: URL, private: bool = False) -> str | None:
    """Why a redirect to ``url``, another origin than the upstream's, is not followed (None:
    it is, if its host's addresses turn out to be allowed)."""
    if url.scheme != "https":
        return "to another origin over plain http (not followed)"
    if not url.host or url.user or url.password:
        return "to a URL without a host, or with credentials (not followed)"
    why = host_refusal(url.host, private)
    return None if why is None else f"to {_REFUSED[why]}"


class OwnPool:
    """An upstream's aiohttp session on a connection pool of its own of ``limit`` connections,
    made by ``make`` when first needed: an upstream that holds its answers waits on its own
    connections, never on those the gateway's reads of its storage and its replicas use."""

    def __init__(self, make: Callable[[aiohttp.BaseConnector], aiohttp.ClientSession],
                 limit: int) -> None:
        self._make, self._limit = make, limit
        self._session: aiohttp.ClientSession | None = None

    def __call__(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self._make(aiohttp.TCPConnector(limit=self._limit))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class ForeignSession:
    """The aiohttp session for redirect hops to other origins (a registry's CDN), made when
    first needed: its connector resolves names with a :class:`TargetResolver` (private
    networks allowed with ``private_redirects``)."""

    def __init__(self, private_redirects: bool = False) -> None:
        self._private = private_redirects
        self._session: aiohttp.ClientSession | None = None

    def __call__(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # auto_decompress off: blob bytes pass through exactly as stored.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=TargetResolver(self._private)),
                auto_decompress=False, headers=EXACT_BYTES)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> ForeignSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def token_answer(body: bytes, what: str) -> tuple[str, float]:
    """The token in a realm's answer and its lifetime in seconds (60 when not a finite
    positive number); an answer that is not a JSON object with a usable token is an
    UpstreamError."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError) as exc:  # nested past the parser's depth
        raise UpstreamError(502, f"{what}: the answer is not JSON") from exc
    if not isinstance(answer, dict):
        raise UpstreamError(502, f"{what}: the answer is not a JSON object")
    token = answer.get("token") or answer.get("access_token")
    if not isinstance(token, str) or not token:
        raise UpstreamError(502, f"{what}: the answer holds no token")
    if len(token) > MAX_TOKEN_CHARS or not _TOKEN.fullmatch(token):
        raise UpstreamError(502, f"{what}: the token is longer than {MAX_TOKEN_CHARS} "
                                 "characters or holds characters a header cannot")
    lifetime = answer.get("expires_in")
    if (not isinstance(lifetime, (int, float)) or isinstance(lifetime, bool)
            or not math.isfinite(lifetime) or lifetime <= 0):
        lifetime = 60
    return token, float(lifetime)


def _realm_refusal(status: int, asked: str, with_credentials: bool) -> UpstreamError:
    """A token realm's answer other than 200: a 401 to the gateway's credentials refuses
    them (Docker Hub's answer to a wrong password); a 401 without credentials, or a 403
    (they were taken, not for this name), refuses the name; 400, 408, 429 and 5xx keep
    their meaning; anything else (a 404 where the challenge named a realm) is the
    upstream's fault, never "not there"."""
    if status == 401:
        return UpstreamError(status, asked, credentials_refused=with_credentials)
    if status in (400, 403, 408, 429) or status >= 500:
        return UpstreamError(status, asked)
    return UpstreamError(502, f"{asked}: the realm answered {status}")


def _is_basic(auth: str | None) -> bool:
    return auth is not None and auth.startswith("Basic ")


def _tls_reason(exc: aiohttp.ClientSSLError) -> str:
    """A failed TLS handshake in words: the certificate's refusal, or no TLS at all (what
    a plain-HTTP registry answers to ``https://``, the scheme a name without one gets)."""
    error = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None) or exc
    if verify := getattr(error, "verify_message", None):
        return f"certificate not trusted: {verify}"
    if getattr(error, "reason", None) in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"):
        return ("it does not speak TLS; a registry serving plain HTTP (on loopback only) is "
                "named with http://")
    return str(getattr(error, "reason", None) or error)


# One link-value of a Link header (RFC 8288): <target>, then its parameters.
_LINK = re.compile(r"<([^>]*)>([^<]*)")
_REL = re.compile(r';\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,]+))', re.IGNORECASE)


def _next_page(link: str | None) -> str | None:
    """The path of the ``rel="next"`` link-value of a ``Link: </v2/...?last=x&n=100>;
    rel="next"`` header, if any (among others, as RFC 8288 allows). Only its path is taken:
    the next page is asked of the upstream's own origin, never of a host a Link names."""
    for target, params in _LINK.findall(link or ""):
        rel = _REL.search(params)
        if rel is not None and "next" in (rel[1] or rel[2] or "").lower().split():
            if not target:
                return None
            return target if target.startswith("/") else "/" + target.split("/", 3)[-1]
    return None


async def read_bounded(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """The body, read no further than ``limit`` bytes: more is the registry's failure."""
    if response.content_length is not None and response.content_length > limit:
        raise UpstreamError(502, f"{what}: larger than {limit} bytes")
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise UpstreamError(502, f"{what}: larger than {limit} bytes")
    return bytes(body)


def _matches(digest: str, body: bytes) -> bool:
    """Whether ``body`` has ``digest`` (one of an algorithm the gateway checks; any other
    never matches, so it is never taken on the upstream's word)."""
    algorithm = digest.partition(":")[0]
    return algorithm in _CHECKED and content_digest(algorithm, body) == digest


def _scope(name: str) -> str:
    return f"repository:{name}:pull"


async def _pieces(response: aiohttp.ClientResponse, limit: int | None, what: str,
                  grace: float, min_rate: float) -> AsyncGenerator[bytes, None]:
    """The body in the pieces the connection delivered (up to 256 KiB each): joining them
    into larger chunks would copy every byte once more, into fresh pages. Never more than
    ``limit`` bytes, nor slower than ``min_rate`` bytes a second after ``grace`` seconds.
    A transfer that breaks off is an :class:`UpstreamError` (never an aiohttp error a
    consumer might take for its own client going away)."""
    floor = RateFloor(grace, min_rate, partial(_cut_off, response, what))
    try:
        async with response:
            async for piece, _ in response.content.iter_chunks():
                if not piece:
                    continue
                floor.received += len(piece)
                if limit is not None and floor.received > limit:
                    raise UpstreamError(502, f"{what}: more bytes than its manifest says")
                yield piece
            # A body that ends short of its size (sent without a length) is no copy of the
            # blob, even where its bytes hash to the digest: its manifest would name another
            # size.
            if limit is not None and floor.received < limit:
                raise UpstreamError(502, f"{what}: {floor.received} bytes where its manifest "
                                         f"says {limit}")
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        if floor.broken:  # the connection's own error may arrive first
            raise UpstreamTooSlow(what, floor) from exc
        raise UpstreamError(0, f"{what}: the transfer broke off ({type(exc).__name__})") \
            from exc
    finally:
        floor.end()


def _cut_off(response: aiohttp.ClientResponse, what: str, floor: RateFloor) -> None:
    """The floor is broken: the read waiting (or the next) raises, and the connection is
    closed, not returned to the pool."""
    response.content.set_exception(UpstreamTooSlow(what, floor))
    response.close()


def check_pull_through(upstream: PullThroughConfig) -> None:
    """A mirror's ``upstream`` section (called by gateway/config/models.py): an http(s)
    registry URL without credentials in it, plain http only on loopback, and a readable
    password file."""
    problem = registry_url_problem(upstream.url)
    if problem is not None:
        raise ConfigError("url", problem)
    if upstream.password_file is not None:
        if not upstream.username:
            raise ConfigError("password_file", "needs username")
        try:
            upstream.password()
        except OSError as exc:
            raise ConfigError("password_file",
                              f"cannot be read: {exc.strerror or exc}") from None


def registry_url_problem(registry_url: str) -> str | None:
    """Why ``registry_url`` cannot be an upstream registry's (None: it can): an http(s) URL
    without credentials in it, plain http only on loopback (an upstream's answers, and the
    credentials it is sent, are not to cross a network in clear). Mirrors, routes and
    ``ecr-gateway sync`` hold their upstreams to it alike."""
    url = urllib.parse.urlsplit(registry_url)
    try:
        host = url.hostname
    except ValueError:  # an unbalanced [ in the host
        host = None
    if url.scheme not in ("http", "https") or not host:
        # Not the URL itself: one written without its scheme may hold a password.
        return "must be an http(s):// registry URL with a host"
    if url.username or url.password:
        return "credentials go in username and password_file"
    if url.scheme == "http" and not is_loopback(host):
        return "http:// only for a loopback registry; use https://"
    return None
