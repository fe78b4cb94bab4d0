"""A client of any OCI registry, for pull-through: manifests and blobs by name, with the
docker token flow (anonymous or with credentials) or Basic auth, whichever the registry's
challenge asks for.

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
import logging
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from gateway.config.errors import ConfigError
from gateway.oci.digests import is_digest, sha256_digest
from gateway.pullthrough import ratelimit

if TYPE_CHECKING:
    from gateway.config import PullThroughConfig

log = logging.getLogger(__name__)

# Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="..."
_PARAM = re.compile(r'(\w+)="([^"]*)"')


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
                 timeout: float = 30.0, registry: str | None = None) -> None:
        self.url = url.rstrip("/")
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
            body = await response.read()
            media_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
            claimed = response.headers.get("Docker-Content-Digest")
        digest = sha256_digest(body)
        if is_digest(reference) and reference.startswith("sha256:") and reference != digest:
            raise UpstreamError(502, f"{what}: the bytes do not match the digest")
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise UpstreamError(502, f"{what}: the bytes do not match Docker-Content-Digest")
        return UpstreamManifest(body, media_type, digest)

    async def manifest_digest(self, name: str, tag: str, accept: tuple[str, ...]) -> str | None:
        """What ``tag`` points to now (one HEAD), or None when the registry does not say."""
        response = await self._request("HEAD", f"/v2/{name}/manifests/{tag}", _scope(name),
                                       f"manifest {name}:{tag}", {"Accept": ", ".join(accept)})
        async with response:
            return response.headers.get("Docker-Content-Digest")

    async def blob(self, name: str, digest: str) -> tuple[int | None, AsyncIterator[bytes]]:
        """The blob's size (if the registry says) and its bytes, unverified."""
        response = await self._request("GET", f"/v2/{name}/blobs/{digest}", _scope(name),
                                       f"blob {name}@{digest}")
        return response.content_length, _pieces(response)


    async def tags(self, name: str) -> list[str]:
        """Every tag of ``name`` (following the registry's ``Link`` pages)."""
        tags: list[str] = []
        path: str | None = f"/v2/{name}/tags/list?n=1000"
        while path:
            response = await self._request("GET", path, _scope(name), f"the tags of {name}")
            async with response:
                try:
                    page = await response.json(content_type=None)
                except ValueError as exc:
                    raise UpstreamError(502, f"the tags of {name}: not JSON") from exc
                tags += [t for t in page.get("tags") or [] if isinstance(t, str)]
                path = _next_page(response.headers.get("Link"))
        return tags


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


def _scope(name: str) -> str:
    return f"repository:{name}:pull"


async def _pieces(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The body in the pieces the connection delivered (up to 256 KiB each): joining them
    into larger chunks would copy every byte once more, into fresh pages."""
    async with response:
        async for piece, _ in response.content.iter_chunks():
            if piece:
                yield piece


def check_pull_through(upstream: PullThroughConfig) -> None:
    """A mirror's ``upstream`` section (called by gateway/config/models.py): an http(s)
    registry URL without credentials in it, plain http only on loopback, and a readable
    password file."""
    url = urllib.parse.urlsplit(upstream.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError("url", f"must be an http(s):// registry URL, got {upstream.url!r}")
    if url.username or url.password:
        raise ConfigError("url", "credentials go in username and password_file")
    if url.scheme == "http" and not _is_loopback(url.hostname):
        raise ConfigError("url", "http:// only for a loopback registry; use https://")
    if upstream.password_file is not None:
        if not upstream.username:
            raise ConfigError("password_file", "needs username")
        try:
            upstream.password()
        except OSError as exc:
            raise ConfigError("password_file",
                              f"cannot be read: {exc.strerror or exc}") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
