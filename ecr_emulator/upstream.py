"""A minimal OCI distribution client for pull through cache: manifests and blobs of an
upstream registry, anonymous or with a username and access token.

Authentication follows the distribution spec: a 401 carries ``WWW-Authenticate``; ``Basic``
is answered with the credential, ``Bearer realm=…,service=…,scope=…`` by fetching a token
from the realm (with the credential, if any) and retrying. The realm is asked only on the
upstream's own host or a well-known registry's realm host (``auth.docker.io`` for Docker
Hub), as the gateway's pull-through asks it (:mod:`ecr_model.token_realms`): ECR's pull
through cache serves a fixed set of registries and never sends their credential to a host a
challenge names. Redirects are followed as ECR's pull through cache reaches the internet
(``upstream_session``): never to a private, loopback or metadata address. Blobs are
streamed to a file and their sha256 checked as they arrive; nothing is held whole in memory.
Every failure is an ``UpstreamError`` whose ``kind`` maps onto ECR's documented failure
codes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson
from yarl import URL

from ecr_emulator.upstream_session import RedirectRefused, UpstreamSession
from ecr_model.token_realms import realm_allowed

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
)
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # PutImage's limit
CHUNK = 1024 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_read=60)
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


class UpstreamError(Exception):
    """``kind``: unavailable, denied, throttled, not_found or invalid."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Credential:
    username: str
    access_token: str


def base_url(upstream_registry_url: str) -> str:
    """``http(s)://host[:port]``; a bare host (as ECR's rules name them) means https."""
    url = upstream_registry_url if "://" in upstream_registry_url else (
        "https://" + upstream_registry_url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) registry URL: {upstream_registry_url!r}")
    return f"{parts.scheme}://{parts.netloc}".rstrip("/")


def check_registry_url(upstream_registry_url: str) -> None:
    """ValueError unless a connection to the URL could ever be made: an http(s) URL (see
    ``base_url``) with a port from 0 to 65535 and a host name the resolver can encode (labels
    of 1 to 63 characters). A rule stored before this check is refused when used instead:
    ``Upstream`` reports such a host as unreachable."""
    parts = urlsplit(base_url(upstream_registry_url))
    try:
        _ = parts.port
        (parts.hostname or "").encode("idna")
    except ValueError:  # UnicodeError included
        raise ValueError(f"not a registry host: {upstream_registry_url!r}") from None


class Upstream:
    def __init__(self, registry_url: str, credential: Credential | None) -> None:
        self.base = base_url(registry_url)
        self.credential = credential
        self._authorization: str | None = None

    async def ping(self) -> None:
        """Reach ``/v2/`` with the credential; UpstreamError if that fails."""
        async with UpstreamSession(self.base, TIMEOUT) as session:
            async with await self._get(session, "/v2/", None, ""):
                pass

    async def manifest(self, repository: str, reference: str) -> tuple[str, str]:
        """The manifest text and its media type."""
        path = f"/v2/{repository}/manifests/{reference}"
        async with UpstreamSession(self.base, TIMEOUT) as session:
            async with await self._get(session, path, ", ".join(MANIFEST_TYPES),
                                       f"repository:{repository}:pull") as response:
                body = await _read_bounded(response, "invalid", "the upstream manifest")
                media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if reference.startswith("sha256:") and (
                "sha256:" + hashlib.sha256(body).hexdigest()) != reference:
            raise UpstreamError("invalid", f"the upstream manifest does not match {reference}")
        try:
            return body.decode(), media_type
        except UnicodeDecodeError:
            raise UpstreamError("invalid", "the upstream manifest is not UTF-8") from None

    async def referrers(self, repository: str, digest: str) -> list[dict[str, object]]:
        """The descriptors of the manifests whose subject is ``digest``: the distribution
        spec's referrers API, else (a registry without it answers 404) the referrers tag
        schema's index under ``sha256-<hex>``; none if neither exists."""
        index = OCI_INDEX
        try:
            async with UpstreamSession(self.base, TIMEOUT) as session:
                async with await self._get(session, f"/v2/{repository}/referrers/{digest}",
                                           index, f"repository:{repository}:pull") as response:
                    body = await _read_bounded(response, "invalid",
                                               "the upstream referrers list")
        except UpstreamError as exc:
            if exc.kind != "not_found":
                raise
            try:
                text, _ = await self.manifest(repository, digest.replace(":", "-", 1))
            except UpstreamError as fallback:
                if fallback.kind == "not_found":
                    return []
                raise
            body = text.encode()
        try:
            document = orjson.loads(body)  # json.loads recursed on deep nesting
        except ValueError:
            raise UpstreamError("invalid", "the upstream referrers list is not JSON") from None
        found = document.get("manifests") if isinstance(document, dict) else None
        if not isinstance(found, list):
            raise UpstreamError("invalid", "the upstream referrers list is not an index")
        return [d for d in found if isinstance(d, dict) and isinstance(d.get("digest"), str)
                and d["digest"].startswith("sha256:")]

    async def blob_to_file(self, repository: str, digest: str, path: Path, *,
                           expected_size: int | None, max_size: int, fsync: bool) -> int:
        """Stream blob ``digest`` into ``path``, checking its sha256; the byte count. The
        transfer stops at the first byte past ``expected_size`` (else ``max_size``): an
        upstream sending without end must not fill the disk."""
        hasher = hashlib.sha256()
        size = 0
        limit = expected_size if expected_size is not None else max_size
        async with UpstreamSession(self.base, TIMEOUT) as session:
            async with await self._get(session, f"/v2/{repository}/blobs/{digest}", None,
                                       f"repository:{repository}:pull") as response:
                if (response.content_length or 0) > limit:
                    raise UpstreamError("invalid", f"the upstream blob {digest} has "
                                        f"{response.content_length} bytes, more than {limit}")
                f = await asyncio.to_thread(open, path, "wb")
                try:
                    async for chunk in response.content.iter_chunked(CHUNK):
                        hasher.update(chunk)
                        size += len(chunk)
                        if size > limit:
                            raise UpstreamError("invalid", f"the upstream blob {digest} has "
                                                f"more than {limit} bytes")
                        await asyncio.to_thread(f.write, chunk)
                    await asyncio.to_thread(f.flush)
                    if fsync:
                        await asyncio.to_thread(os.fsync, f.fileno())
                except (TimeoutError, aiohttp.ClientError) as exc:
                    raise UpstreamError("unavailable",
                                        f"the upstream blob transfer failed: {_failure(exc)}"
                                        ) from None
                finally:
                    await asyncio.to_thread(f.close)
        if "sha256:" + hasher.hexdigest() != digest:
            raise UpstreamError("invalid", f"the upstream blob does not match {digest}")
        if expected_size is not None and size != expected_size:
            raise UpstreamError("invalid", f"the upstream blob {digest} has {size} bytes, "
                                f"its descriptor says {expected_size}")
        return size

    async def _get(self, session: UpstreamSession, path: str, accept: str | None,
                   scope: str) -> aiohttp.ClientResponse:
        """A 200 response to GET ``path`` (following the auth challenge once)."""
        for attempt in range(2):
            headers = {"Accept": accept} if accept else {}
            if self._authorization:
                headers["Authorization"] = self._authorization
            try:
                response = await session.get(self.base + path, headers)
            except RedirectRefused as exc:
                raise UpstreamError("unavailable", f"the upstream registry: {exc}"
                                    ) from None
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                # ValueError: a host the resolver cannot encode (a rule stored before
                # check_registry_url refused such hosts)
                raise UpstreamError("unavailable",
                                    f"the upstream registry is unreachable: {_failure(exc)}"
                                    ) from None
            if response.status == 401 and attempt == 0:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.release()
                await self._authenticate(session, challenge, scope)
                continue
            if response.status == 200:
                return response
            response.release()
            raise _status_error(response.status, path)
        raise UpstreamError("denied", "the upstream registry refused the credential")

    async def _authenticate(self, session: UpstreamSession, challenge: str,
                            scope: str) -> None:
        scheme = challenge.split(" ", 1)[0].lower()
        basic = None
        if self.credential is not None:
            pair = f"{self.credential.username}:{self.credential.access_token}".encode()
            basic = "Basic " + base64.b64encode(pair).decode()
        if scheme == "basic":
            if basic is None:
                raise UpstreamError("denied", "the upstream registry requires a credential")
            self._authorization = basic
            return
        if scheme != "bearer":
            raise UpstreamError("denied", "the upstream registry asks for an unknown "
                                "authentication scheme")
        fields = dict(_CHALLENGE.findall(challenge))
        realm = fields.get("realm")
        if not realm:
            raise UpstreamError("denied", "the upstream registry's challenge has no realm")
        if not realm_allowed(realm, self.base):
            # Named by nothing but its host: a realm URL may carry anything.
            raise UpstreamError("unavailable", "the upstream registry names a token realm on "
                                f"another host, {_host(realm)} (not asked)")
        query = {k: v for k, v in (("service", fields.get("service")),
                                   ("scope", fields.get("scope") or scope)) if v}
        try:
            headers = {"Authorization": basic} if basic else {}
            async with await session.get(URL(realm).extend_query(query),
                                         headers) as response:
                if response.status != 200:
                    raise _status_error(response.status, "token")
                answer = orjson.loads(await _read_bounded(response, "unavailable",
                                                          "the upstream token"))
        except RedirectRefused as exc:
            raise UpstreamError("unavailable", f"the upstream token service: {exc}"
                                ) from None
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise UpstreamError("unavailable",
                                f"the upstream token service failed: {_failure(exc)}") from None
        token = answer.get("token") or answer.get("access_token") if isinstance(
            answer, dict) else None
        if not isinstance(token, str):
            raise UpstreamError("denied", "the upstream token service gave no token")
        self._authorization = f"Bearer {token}"


async def _read_bounded(response: aiohttp.ClientResponse, kind: str, what: str) -> bytes:
    """The whole body, up to MAX_MANIFEST_BYTES (an upstream sending without end must not
    fill memory). Read to its end: one ``read(n)`` returns only what has arrived so far,
    and a body often comes in several pieces (TLS records, a slow link)."""
    too_large = UpstreamError(kind, f"{what} is larger than {MAX_MANIFEST_BYTES} bytes")
    if (response.content_length or 0) > MAX_MANIFEST_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > MAX_MANIFEST_BYTES:
            raise too_large
    return bytes(body)


def _failure(exc: BaseException) -> str:
    """What went wrong with a request, for an error message: a connection refused says the
    host and port it tried, anything else its kind alone. aiohttp's words for the others
    (a malformed answer, a connect timeout) name the whole URL asked, query and all, and a
    registry's redirect to its CDN signs there: a credential for the URL's lifetime."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return str(exc)  # "Cannot connect to host <host>:<port> ssl:… [<the OS's reason>]"
    return type(exc).__name__


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "no host"
    except ValueError:
        return "no host"


def _status_error(status: int, what: str) -> UpstreamError:
    if status in (401, 403):
        return UpstreamError("denied", f"the upstream registry denied access ({status})")
    if status == 404:
        return UpstreamError("not_found", f"the upstream registry has no {what.rsplit('/', 1)[-1]}")
    if status == 429:
        return UpstreamError("throttled", "the upstream registry is throttling requests")
    return UpstreamError("unavailable", f"the upstream registry answered {status}")
