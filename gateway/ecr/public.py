"""ECR Public as an upstream: its API for pushes, its registry endpoint for pulls.

A route with ``upstream_kind: ecr-public`` (or the ``public.ecr.aws`` mirror) serves
repositories of ECR Public (service ``ecr-public``, us-east-1). Pushes use the actions the
two services share (BatchCheckLayerAvailability, InitiateLayerUpload, UploadLayerPart,
CompleteLayerUpload, PutImage), through the ``ecr-public`` client this module hands the ECR
Public backend (gateway/backends/ecr_public.py). ECR Public has no BatchGetImage,
GetDownloadUrlForLayer nor ListImages: pulls, HEADs, tag lists and referrers go to the
public registry endpoint (``registry_url``, default https://public.ecr.aws), which is what
this module speaks:

* a bearer token from the endpoint's token realm, obtained with the password of ECR Public's
  GetAuthorizationToken (both cached like ECR's tokens, renewed ahead of expiry); without
  usable AWS credentials an anonymous token, with the endpoint's lower rate limits;
* ``/v2/<alias>/<repository>/...``: the alias is the route's ``registry_alias``, else the
  registry's primary alias from DescribeRegistries; mirror names carry it already;
* a blob GET answers a redirect to storage, whose URL is handed to the client (or proxied)
  exactly as GetDownloadUrlForLayer's.

What the endpoint cannot tell comes from the API: the layers of the gateway's own repositories
(BatchCheckLayerAvailability: an uploaded layer is not served until an image references it),
whether an image survived losing a tag (DescribeImages), the repositories (DescribeRepositories).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Hashable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import aiohttp
import orjson

from ecr_model.redirect_targets import REDIRECTS
from gateway.config import RouteConfig
from gateway.ecr.calls import call, counted
from gateway.ecr.clients import ClientFactory, Upstream
from gateway.ecr.retry import RetryPolicy
from gateway.ecr.routing import ECR_PUBLIC_REGION, Target
from gateway.ecr.tokens import AuthToken, TokenCache
from gateway.observability.metrics import UPSTREAM_CALLS
from gateway.oci import errors as oci
from gateway.oci.backend import Manifest
from gateway.oci.digests import is_digest, sha256_digest
from gateway.oci.errors import OciError
from gateway.oci.mediatypes import MANIFEST_TYPES, Descriptor
from gateway.oci.request import Credentials
from gateway.pullthrough.upstream import (
    DEADLINE_TIMEOUTS,
    MAX_MANIFEST_BYTES,
    MAX_TAG_PAGE_BYTES,
    MAX_TAG_PAGES,
    MAX_TAGS,
    MAX_TOKEN_ANSWER_BYTES,
    UpstreamError,
    read_bounded,
    realm_allowed,
    registry_host,
    token_answer,
)

log = logging.getLogger(__name__)

DEFAULT_REGISTRY_URL = "https://public.ecr.aws"
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
# What is read of an answer of the registry endpoint (a route's registry_url may be any
# host): a manifest as ECR's own limit, a tag page as the pull-through's, a referrers list,
# and anything else (an error body) at most this; larger is the endpoint's failure.
MAX_REFERRERS_BYTES = 16 * 1024 * 1024
MAX_OTHER_BYTES = 64 * 1024


class EcrPublic:
    def __init__(self, clients: ClientFactory,
                 upstream_for: Callable[[str, Credentials | None], Upstream],
                 policy: RetryPolicy, http: Callable[[], aiohttp.ClientSession], *,
                 endpoint_url: str | None, registry_url: str | None) -> None:
        self._clients = clients
        self._upstream_for = upstream_for
        self._policy = policy
        self._http = http
        self._endpoint_url = endpoint_url
        self._registry_url = (registry_url or DEFAULT_REGISTRY_URL).rstrip("/")
        # Fetched as the caller the key names (each get passes its own fetch).
        self.tokens = TokenCache(_fetched_by_get)  # GetAuthorizationToken
        self.bearers = TokenCache(_fetched_by_get)  # the registry endpoint's tokens
        self._aliases: dict[Hashable, str] = {}

    # -- the API ----------------------------------------------------------------------------

    def upstream(self, caller: Credentials | None) -> Upstream:
        """Where ecr-public calls go, as whom (the caller's keys in auth.mode aws)."""
        base = self._upstream_for(ECR_PUBLIC_REGION, caller)
        return dataclasses.replace(base, service="ecr-public",
                                   endpoint_url=self._endpoint_url or base.endpoint_url)

    async def client(self, target: Target) -> Any:
        return counted(await self._clients.client(self.upstream(target.caller)), target.calls)

    async def _call(self, target: Target, action: str, **params: Any) -> dict[str, Any]:
        return await call(await self.client(target), action, self._policy, **params)

    def _identity(self, caller: Credentials | None) -> tuple[str | None, str | None]:
        upstream = self.upstream(caller)
        return upstream.access_key_id, upstream.endpoint_url

    async def authorization_token(self, target: Target) -> AuthToken:
        return await self.tokens.get(self._identity(target.caller),
                                     lambda: self._fetch_authorization(target))

    async def _fetch_authorization(self, target: Target) -> AuthToken:
        answer = await self._call(target, "GetAuthorizationToken")
        return AuthToken.from_ecr(answer["authorizationData"], time.time())

    def create_params(self, route: RouteConfig) -> dict[str, Any]:
        """CreateRepository's parameters in ECR Public (no mutability, scanning, KMS)."""
        tags = route.repository.tags
        return {"tags": [{"Key": k, "Value": v} for k, v in tags.items()]} if tags else {}

    async def alias(self, target: Target) -> str:
        alias = target.route.registry_alias
        if alias is not None:
            return alias
        key = (self._identity(target.caller), target.route.registry_id)
        known = self._aliases.get(key)
        if known is None:
            answer = await self._call(target, "DescribeRegistries")
            registries = answer.get("registries", [])
            wanted = [r for r in registries if target.route.registry_id in (
                None, r.get("registryId"))]
            aliases = [a for r in wanted[:1] for a in r.get("aliases", [])]
            primary = [a["name"] for a in aliases if a.get("primaryRegistryAlias")]
            names = primary or [a["name"] for a in aliases]
            if not names:
                # Not named: a registry id is an account id (the log has the route).
                log.warning("ECR Public registry %s has no alias the gateway can read",
                            target.route.registry_id or "(the gateway's own)")
                raise OciError(oci.NAME_UNKNOWN, {"repository": target.repository},
                               message="the ECR Public registry has no alias yet")
            known = self._aliases[key] = names[0]
        return known

    # -- the registry endpoint ---------------------------------------------------------------

    @property
    def registry_url_default(self) -> str:
        """The registry endpoint of routes and mirrors that name none."""
        return self._registry_url

    def registry_url(self, target: Target) -> str:
        return (target.route.registry_url or self._registry_url).rstrip("/")

    async def _path(self, target: Target) -> str:
        alias = await self.alias(target)
        return f"{alias}/{target.repository}" if alias else target.repository

    async def _bearer(self, target: Target, registry_url: str) -> str:
        token = await self.bearers.get((self._identity(target.caller), registry_url),
                                       lambda: self._fetch_bearer(target, registry_url))
        return token.password

    def _deadline(self) -> float | None:
        """The time a whole answer of the registry endpoint may take: a few read timeouts
        (one that sends a byte just inside each read timeout holds no request for ever)."""
        read = self._http().timeout.sock_read
        return DEADLINE_TIMEOUTS * read if read else None

    async def _fetch_bearer(self, target: Target, registry_url: str) -> AuthToken:
        async with asyncio.timeout(self._deadline()):
            return await self._fetch_bearer_now(target, registry_url)

    async def _fetch_bearer_now(self, target: Target, registry_url: str) -> AuthToken:
        http = self._http()
        async with http.get(f"{registry_url}/v2/", allow_redirects=False) as probe:
            challenge = probe.headers.get("WWW-Authenticate", "")
        params = dict(_CHALLENGE.findall(challenge))
        realm = params.pop("realm", f"{registry_url}/token")
        params.pop("error", None)
        # The Basic password below pushes to the account's ECR Public registry: it goes to
        # the endpoint's own host only (https, http on loopback), whatever the challenge says.
        if not realm_allowed(realm, registry_url):
            log.warning("the ECR Public registry %s names the token realm host %s, not its "
                        "own: not asked", registry_host(registry_url), registry_host(realm))
            raise OciError(oci.UNAVAILABLE, {"registry": registry_host(registry_url)},
                           message="the ECR Public registry names a token realm on another "
                                   "host", headers={"Retry-After": "1"})
        headers = {}
        try:
            authorization = await self.authorization_token(target)
            basic = f"{authorization.username}:{authorization.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(basic).decode()
        except OciError as exc:  # no usable AWS identity: pull anonymously (lower limits)
            log.warning("ECR Public GetAuthorizationToken failed (%s): pulling from %s "
                        "anonymously", exc.message, registry_url)
        now = time.time()
        # Redirects are not followed (they could lead anywhere); the answer is read bounded.
        async with http.get(realm, params=params, headers=headers,
                            allow_redirects=False) as r:
            status = r.status
            body = bytearray()
            if status == 200:
                async for chunk in r.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > MAX_TOKEN_ANSWER_BYTES:  # no token is that long
                        break
        try:
            if status != 200 or len(body) > MAX_TOKEN_ANSWER_BYTES:
                raise UpstreamError(status, "the token realm")
            token, lifetime = token_answer(bytes(body), "the token realm")
        except UpstreamError:
            raise OciError(oci.UNAVAILABLE, {"upstream_status": status},
                           message="the ECR Public registry gave no token",
                           headers={"Retry-After": "1"}) from None
        return AuthToken("", token, registry_url, now + lifetime, now)

    async def _request(self, target: Target, method: str, suffix: str, *, what: str,
                       headers: dict[str, str] | None = None,
                       params: dict[str, str] | None = None, limit: int = MAX_OTHER_BYTES
                       ) -> tuple[int, dict[str, str], bytes]:
        """One request to the registry endpoint: (status, headers, body); a 401 renews the
        token once; 429 and outages become OCI errors. A 200's body is read up to ``limit``
        bytes, any other's up to MAX_OTHER_BYTES: more is the endpoint's failure (502)."""
        registry_url = self.registry_url(target)
        url = f"{registry_url}/v2/{await self._path(target)}/{suffix}"
        if params:
            url += "?" + urlencode(params)
        tally = target.calls
        for attempt in range(2):
            UPSTREAM_CALLS.labels(f"public:{what}").inc()
            if tally is not None:
                tally.append(f"public:{what}")
            try:
                auth = {"Authorization": f"Bearer {await self._bearer(target, registry_url)}"}
                async with asyncio.timeout(self._deadline()), self._http().request(
                        method, url, headers={**(headers or {}), **auth},
                        allow_redirects=False) as r:
                    status, answer = r.status, dict(r.headers)
                    body: bytes | None = b""
                    if method != "HEAD" and status not in REDIRECTS:
                        try:
                            body = await read_bounded(
                                r, limit if status == 200 else MAX_OTHER_BYTES, what)
                        except UpstreamError:
                            body = None  # too large
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise OciError(oci.UNAVAILABLE, {"registry": registry_url},
                               message=f"ECR Public registry unreachable: {type(exc).__name__}",
                               headers={"Retry-After": "1"}) from exc
            if status == 401 and attempt == 0:
                self.bearers.invalidate((self._identity(target.caller), registry_url))
                continue
            break
        if body is None:
            raise OciError(oci.UPSTREAM_ERROR, {"registry": registry_host(registry_url)},
                           message=f"the ECR Public registry's answer to {what} is too large")
        if status == 429:
            raise OciError(oci.TOOMANYREQUESTS, {"registry": registry_url},
                           headers={"Retry-After": answer.get("Retry-After", "1")})
        if status >= 500 or status == 401:
            raise OciError(oci.UNAVAILABLE, {"upstream_status": status},
                           message="the ECR Public registry failed", headers={"Retry-After": "1"})
        return status, answer, body

    async def manifest(self, target: Target, reference: str) -> Manifest:
        status, headers, body = await self._request(
            target, "GET", f"manifests/{reference}", what="GetManifest",
            headers={"Accept": ", ".join(MANIFEST_TYPES)}, limit=MAX_MANIFEST_BYTES)
        if status != 200:
            raise _not_found(status, body, oci.MANIFEST_UNKNOWN, {"reference": reference})
        media_type = headers.get("Content-Type", "application/json").split(";")[0].strip()
        digest = sha256_digest(body)
        if is_digest(reference) and digest != reference:
            raise OciError(oci.UPSTREAM_ERROR, {"reference": reference},
                           message="the ECR Public registry answered another manifest than "
                                   "the digest asked for")
        return Manifest(body, media_type, digest)

    async def blob_size(self, target: Target, digest: str) -> int | None:
        status, headers, _ = await self._request(target, "HEAD", f"blobs/{digest}",
                                                 what="HeadBlob")
        if status != 200:
            return None
        return int(headers.get("Content-Length", "0"))

    async def blob_url(self, target: Target, digest: str) -> str:
        status, headers, body = await self._request(target, "GET", f"blobs/{digest}",
                                                    what="GetBlob")
        if status in REDIRECTS and "Location" in headers:
            return urljoin(self.registry_url(target) + "/", headers["Location"])
        if status == 200:
            raise OciError(oci.UNAVAILABLE, {"digest": digest},
                           message="the ECR Public registry served the blob without a "
                                   "redirect to its storage")
        raise _not_found(status, body, oci.BLOB_UNKNOWN, {"digest": digest})

    async def tags(self, target: Target) -> list[str]:
        """Every tag, following the endpoint's pages: at most MAX_TAGS in MAX_TAG_PAGES
        pages, none asked twice (an endpoint whose pages never end is the endpoint's
        failure, not a list held in memory for ever)."""
        found: set[str] = set()
        params: dict[str, str] | None = {"n": "1000"}
        asked: set[tuple[tuple[str, str], ...]] = set()
        while params is not None:
            page = tuple(sorted(params.items()))
            if page in asked or len(asked) >= MAX_TAG_PAGES:
                raise _too_many(target, "its tag pages loop or never end")
            asked.add(page)
            status, headers, body = await self._request(target, "GET", "tags/list",
                                                        what="ListTags", params=params,
                                                        limit=MAX_TAG_PAGE_BYTES)
            if status != 200:
                raise _not_found(status, body, oci.NAME_UNKNOWN, {"name": target.repository})
            listed = _json_object(body).get("tags") or []
            if not isinstance(listed, list):
                raise _too_many(target, "its tags are not a list")
            found.update(t for t in listed if isinstance(t, str))
            if len(found) > MAX_TAGS:
                raise _too_many(target, f"it lists more than {MAX_TAGS} tags")
            params = _next_page(headers.get("Link", ""))
        return sorted(found)

    async def referrers(self, target: Target, digest: str,
                        artifact_type: str | None) -> list[Descriptor]:
        params = {"artifactType": artifact_type} if artifact_type else None
        status, _, body = await self._request(target, "GET", f"referrers/{digest}",
                                              what="ListReferrers", params=params,
                                              limit=MAX_REFERRERS_BYTES)
        if status != 200:  # no referrers API there, or no such repository: none
            return []
        return [Descriptor(m["mediaType"], m["digest"], int(m.get("size", 0)),
                           m.get("artifactType"), m.get("annotations") or None)
                for m in orjson.loads(body).get("manifests", [])
                if not artifact_type or m.get("artifactType") == artifact_type]


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        raise OciError(oci.UPSTREAM_ERROR, {}, message="the ECR Public registry's answer is "
                       "not a JSON object")
    return answer


def _too_many(target: Target, why: str) -> OciError:
    return OciError(oci.UPSTREAM_ERROR, {"name": target.repository},
                    message=f"the ECR Public registry's tag list is refused: {why}")


async def _fetched_by_get(key: Hashable) -> AuthToken:
    raise AssertionError(f"token {key!r} asked for without its fetch")


def _not_found(status: int, body: bytes, default: oci.ErrorCode,
               detail: dict[str, Any]) -> OciError:
    """The OCI error for a non-200 answer: the registry's own code when it names one."""
    try:
        code = orjson.loads(body)["errors"][0]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        code = ""
    if code == "NAME_UNKNOWN":
        return OciError(oci.NAME_UNKNOWN, detail)
    if status == 404:
        return OciError(default, detail)
    if status == 403:
        return OciError(oci.DENIED, detail)
    return OciError(oci.UPSTREAM_ERROR, {**detail, "upstream_status": status})


def _next_page(link: str) -> dict[str, str] | None:
    """The query of a ``Link: <...>; rel="next"`` header, or None on the last page."""
    match = re.search(r"<([^>]*)>", link)
    if match is None:
        return None
    return dict(parse_qsl(urlsplit(match[1]).query))
