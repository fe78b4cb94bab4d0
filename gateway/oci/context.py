"""Application keys the OCI handlers read: the storage backend, settings, an HTTP client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from gateway.blobcache import BlobCache
from gateway.oci.backend import Capabilities, Registry
from gateway.oci.download_targets import DownloadTargets
from gateway.oci.errors import DIGEST_INVALID, OciError
from gateway.oci.request import RequestContext
from gateway.state.fills import FillLocks


@dataclass(frozen=True)
class OciSettings:
    blob_mode: str = "redirect"  # "redirect": 307 to the upstream URL; "proxy": stream it
    max_page_size: int = 1000  # the largest `n` a tags or catalog page may ask for
    default_page_size: int = 0  # 0 = everything in one page unless the client asks for `n`
    direct_reads: bool = False  # local blob files read past the page cache (files.py)
    referrers_send_timeout: float = 60.0  # to send a referrers answer whole (listings.py)


# Called with (request, repository name or None for the catalog, action) before a handler
# runs; raises OciError to refuse. Actions: "pull", "push", "delete", "catalog".
AccessCheck = Callable[[web.Request, str | None, str], Awaitable[None]]

REGISTRY = web.AppKey("registry", Registry)
SETTINGS = web.AppKey("oci_settings", OciSettings)
HTTP_CLIENT = web.AppKey("http_client", aiohttp.ClientSession)
# Blob download URLs fetched by the gateway: only where storage's URLs may lead.
DOWNLOADS = web.AppKey("downloads", DownloadTargets)
ACCESS_CHECK: web.AppKey[AccessCheck] = web.AppKey("access_check")
# Whether the catalog may show a repository to this request's caller (set with auth on).
CatalogFilter = Callable[[web.Request, str], bool]
CATALOG_FILTER: web.AppKey[CatalogFilter] = web.AppKey("catalog_filter")
# Request key: the caller may not read a mount's source, so the POST is an ordinary upload
# (a refusal would tell them about a repository they cannot see).
MOUNT_REFUSED = "mount_refused"
# Proxy mode: local copies of blob bytes by digest (storage-agnostic; absent = no cache).
BLOB_CACHE = web.AppKey("blob_cache", BlobCache)
# Request key: the request's RequestContext, built by the dispatcher.
REQUEST_CONTEXT = "request_context"
# Shared state: one replica fills the cache with a blob, the others read its copy.
FILL_LOCKS = web.AppKey("fill_locks", FillLocks)


def registry(request: web.Request) -> Registry:
    return request.app[REGISTRY]


def request_context(request: web.Request) -> RequestContext:
    ctx: RequestContext = request[REQUEST_CONTEXT]
    return ctx


def capabilities(request: web.Request) -> Capabilities:
    return registry(request).capabilities(request_context(request))


def check_stored_algorithm(request: web.Request, digest: str) -> None:
    """400 DIGEST_INVALID for content addressed by an algorithm the backend cannot store."""
    accepted = capabilities(request).digest_algorithms
    if digest.partition(":")[0] not in accepted:
        raise OciError(DIGEST_INVALID, {"digest": digest},
                       message=f"this registry stores {', '.join(sorted(accepted))} digests only")


def settings(request: web.Request) -> OciSettings:
    return request.app[SETTINGS]
