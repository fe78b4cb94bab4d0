"""A client of any OCI registry, for pull-through: manifests and blobs by name, with the
docker token flow (anonymous or with credentials) or Basic auth, whichever the registry's
challenge asks for.

A challenge's token realm is asked only when it is the upstream's own host, the known realm
of a well-known registry (``registry-1.docker.io`` → ``auth.docker.io``) or one the
configuration lists (``token_realm_hosts``), over https (http only on loopback): an upstream
never points the gateway's credentials, or its requests, at another host. A shared domain is
not enough: ``a.azurecr.io`` and ``b.azurecr.io`` belong to different tenants. Redirects to
another origin lose the Authorization header (aiohttp drops it).

Every manifest is checked against its digest before it is returned (a digest reference must
match the bytes; a ``Docker-Content-Digest`` header must too); blobs are returned as streams
for the caller to verify as the bytes pass. The upstream's refusals become
:class:`UpstreamError` with the HTTP status, so the caller tells "not there" (404) from "not
now" (429, 5xx, unreachable). Credentials never reach a log line or an error message.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import re
import time
import urllib.parse
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from gateway.config.errors import ConfigError
from gateway.oci.digests import content_digest, is_digest, sha256_digest
from gateway.pullthrough import ratelimit

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
# Digest algorithms a manifest is checked against.
_CHECKED = ("sha256", "sha512")


@dataclass(frozen=True)
class UpstreamManifest:
    body: bytes
    media_type: str
    digest: str


class UpstreamError(Exception):
    """The upstream registry refused or could not be reached (``status`` 0)."""

    def __init__(self, status: int, what: str, retry_after: str | None = None) -> None:
        super().__init__(f"upstream answered {status or 'nothing'} for {what}")
        self.status = status
        self.what = what
        self.retry_after = retry_after

    @property
    def missing(self) -> bool:
        return self.status == 404

    @property
    def unavailable(self) -> bool:
        """Down, slow, overloaded or rate-limiting: a cached copy may stand in."""
        return self.status in (0, 408, 429) or self.status >= 500


class OciUpstream:
    def __init__(self, url: str, http: Callable[[], aiohttp.ClientSession],
                 username: str | None = None, password: str | None = None,
                 timeout: float = 30.0, registry: str | None = None,
                 realm_hosts: tuple[str, ...] = ()) -> None:
        self.url = url.rstrip("/")
        self._realm_hosts = realm_hosts
        # The metrics' label: the host name (never the URL, which may carry credentials).
        self.registry = registry or registry_host(url)
        self._http = http
        self._basic = (base64.b64encode(f"{username}:{password or ''}".encode()).decode()
                       if username else None)
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout,
                                              sock_read=timeout)
        # The Authorization value for each scope (a bearer token until shortly before it
        # expires, or Basic), learned from the registry's challenges.
        self._auth: dict[str, tuple[str, float]] = {}
        self._token_locks: dict[str, asyncio.Lock] = {}

    # -- requests ---------------------------------------------------------------------------

    async def _request(self, method: str, path: str, scope: str, what: str,
                       headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        """One request, authenticated as the registry's challenge asks (at most one retry
        after a 401). The caller releases the response."""
        wanted = dict(headers or {})
        for attempt in range(2):
            auth = self._authorization(scope)
            sent = {**wanted, **({"Authorization": auth} if auth else {})}
            try:
                response = await self._http().request(method, f"{self.url}{path}",
                                                      headers=sent, timeout=self._timeout)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise UpstreamError(0, what) from exc
            ratelimit.observe(self.registry, response.status, response.headers)
            if response.status == 401 and attempt == 0:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.release()
                await self._answer(challenge, scope, what)
                continue
            if response.status >= 400:
                retry_after = response.headers.get("Retry-After")
                response.release()
                raise UpstreamError(response.status, what, retry_after)
            return response
        raise UpstreamError(401, what)

    def _authorization(self, scope: str) -> str | None:
        held = self._auth.get(scope)
        return held[0] if held is not None and held[1] > time.monotonic() else None

    async def _answer(self, challenge: str, scope: str, what: str) -> None:
        """Get what a 401's challenge asks for: a bearer token for ``scope``, or Basic."""
        kind, _, rest = challenge.partition(" ")
        if kind.lower() == "basic" and self._basic is not None:
            self._auth[scope] = (f"Basic {self._basic}", float("inf"))
            return
        if kind.lower() != "bearer":
            raise UpstreamError(401, what)
        params = dict(_PARAM.findall(rest))
        realm = params.get("realm")
        if not realm:
            raise UpstreamError(401, what)
        if not realm_allowed(realm, self.url, self._realm_hosts):
            log.warning("upstream %s names the token realm host %s, not its own: not asked "
                        "(list it in token_realm_hosts if it is the registry's)", self.registry,
                        registry_host(realm))
            raise UpstreamError(502, f"{what}: a token realm on another host")
        lock = self._token_locks.setdefault(scope, asyncio.Lock())
        async with lock:  # many pulls of one image wait for one token
            if self._authorization(scope) is not None:
                return
            query = {"scope": scope}
            if params.get("service"):
                query["service"] = params["service"]
            headers = {"Authorization": f"Basic {self._basic}"} if self._basic else {}
            try:
                async with self._http().get(realm, params=query, headers=headers,
                                            timeout=self._timeout) as response:
                    if response.status != 200:
                        raise UpstreamError(response.status, f"a token for {scope}")
                    answer = await response.json(content_type=None)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                raise UpstreamError(0, f"a token for {scope}") from exc
            token = answer.get("token") or answer.get("access_token")
            if not isinstance(token, str) or not token:
                raise UpstreamError(401, f"a token for {scope}")
            lifetime = float(answer.get("expires_in") or 60)
            self._auth[scope] = (f"Bearer {token}", time.monotonic() + max(lifetime - 10, 1))

    # -- manifests and blobs ----------------------------------------------------------------

    async def manifest(self, name: str, reference: str,
                       accept: tuple[str, ...]) -> UpstreamManifest:
        what = f"manifest {name}:{reference}"
        response = await self._request("GET", f"/v2/{name}/manifests/{reference}",
                                       _scope(name), what, {"Accept": ", ".join(accept)})
        async with response:
            body = await _read_bounded(response, MAX_MANIFEST_BYTES, what)
            media_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
            claimed = response.headers.get("Docker-Content-Digest")
        if is_digest(reference) and not _matches(reference, body):
            raise UpstreamError(502, f"{what}: the bytes do not match the digest")
        if claimed and claimed.partition(":")[0] in _CHECKED and not _matches(claimed, body):
            raise UpstreamError(502, f"{what}: the bytes do not match Docker-Content-Digest")
        return UpstreamManifest(body, media_type, sha256_digest(body))

    async def manifest_digest(self, name: str, tag: str, accept: tuple[str, ...]) -> str | None:
        """What ``tag`` points to now (one HEAD), or None when the registry does not say."""
        response = await self._request("HEAD", f"/v2/{name}/manifests/{tag}", _scope(name),
                                       f"manifest {name}:{tag}", {"Accept": ", ".join(accept)})
        async with response:
            return response.headers.get("Docker-Content-Digest")

    async def blob(self, name: str, digest: str, size: int | None = None
                   ) -> tuple[int | None, AsyncGenerator[bytes, None]]:
        """The blob's size (``size``, what a manifest naming it says, else the registry's
        word if any) and its bytes, unverified but never more than ``size``."""
        what = f"blob {name}@{digest}"
        response = await self._request("GET", f"/v2/{name}/blobs/{digest}", _scope(name), what)
        if size is not None and response.content_length not in (None, size):
            response.release()
            raise UpstreamError(502, f"{what}: {response.content_length} bytes where its "
                                     f"manifest says {size}")
        return (response.content_length if size is None else size), \
            _pieces(response, size, what)

    async def tags(self, name: str) -> list[str]:
        """Every tag of ``name`` (following the registry's ``Link`` pages)."""
        tags: list[str] = []
        path: str | None = f"/v2/{name}/tags/list?n=1000"
        asked: set[str] = set()
        while path:
            if path in asked:  # an upstream whose pages lead back would never end
                raise UpstreamError(502, f"the tags of {name}: the pages loop")
            asked.add(path)
            what = f"the tags of {name}"
            response = await self._request("GET", path, _scope(name), what)
            async with response:
                body = await _read_bounded(response, MAX_TAG_PAGE_BYTES, what)
                path = _next_page(response.headers.get("Link"))
            try:
                page = json.loads(body)
            except ValueError as exc:
                raise UpstreamError(502, f"{what}: not JSON") from exc
            listed = page.get("tags") if isinstance(page, dict) else None
            tags += [t for t in listed or [] if isinstance(t, str)]
        return tags


# Registries whose token service lives on a host of its own (their documented realms).
KNOWN_REALM_HOSTS: dict[str, tuple[str, ...]] = {
    "registry-1.docker.io": ("auth.docker.io",),
    "index.docker.io": ("auth.docker.io",),
    "docker.io": ("auth.docker.io",),
    "registry.gitlab.com": ("gitlab.com",),
    "nvcr.io": ("authn.nvidia.com",),
    "docker.elastic.co": ("docker-auth.elastic.co",),
}


def realm_allowed(realm: str, upstream_url: str, listed: tuple[str, ...] = ()) -> bool:
    """Whether a token realm may be asked (with the upstream's credentials): https (http
    only on loopback), on the upstream's own host, its well-known realm host, or a listed
    host."""
    parts, upstream = urllib.parse.urlsplit(realm), urllib.parse.urlsplit(upstream_url)
    host, own = (parts.hostname or "").lower(), (upstream.hostname or "").lower()
    if not host or parts.username or parts.password:
        return False
    if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(host)):
        return False
    return (host == own or host in KNOWN_REALM_HOSTS.get(own, ())
            or host in (h.lower() for h in listed))


def registry_host(url: str) -> str:
    """``host[:port]`` of a registry URL, without any user information."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "unknown"
    return f"{host}:{parts.port}" if parts.port else host


def _next_page(link: str | None) -> str | None:
    """The path of a ``Link: </v2/...?last=x&n=100>; rel="next"`` header, if any."""
    match = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', link or "")
    if match is None:
        return None
    target = match[1]
    return target if target.startswith("/") else "/" + target.split("/", 3)[-1]


async def _read_bounded(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
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


async def _pieces(response: aiohttp.ClientResponse, limit: int | None,
                  what: str) -> AsyncGenerator[bytes, None]:
    """The body in the pieces the connection delivered (up to 256 KiB each): joining them
    into larger chunks would copy every byte once more, into fresh pages. Never more than
    ``limit`` bytes."""
    received = 0
    async with response:
        async for piece, _ in response.content.iter_chunks():
            if not piece:
                continue
            received += len(piece)
            if limit is not None and received > limit:
                raise UpstreamError(502, f"{what}: more bytes than its manifest says")
            yield piece


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
        return f"must be an http(s):// registry URL, got {registry_url!r}"
    if url.username or url.password:
        return "credentials go in username and password_file"
    if url.scheme == "http" and not _is_loopback(host):
        return "http:// only for a loopback registry; use https://"
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
