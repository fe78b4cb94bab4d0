"""The OCI ``Registry`` backend on ECR Public (routes with ``upstream_kind: ecr-public``).

Pushes go through the ``ecr-public`` API with the actions it shares with ECR (the ECR
backend's); ECR Public has no BatchGetImage, GetDownloadUrlForLayer nor ListImages, so
pulls, tag lists and referrers go to its registry endpoint (gateway/ecr/public.py). A mirror
of others' repositories (``registry_alias: ""``) can ask only that endpoint about layers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import aiohttp

from gateway.backends.ecr import EcrBackend
from gateway.config import CacheConfig, RouteConfig
from gateway.ecr import catalog, referrers
from gateway.ecr.clients import ClientFactory, Upstream
from gateway.ecr.public import MAX_REFERRERS_BYTES, EcrPublic
from gateway.ecr.referrers_budget import Lease, ReferrersBudget
from gateway.ecr.retry import RetryPolicy
from gateway.ecr.routing import Router, Target
from gateway.ecr.staging import StagingStore
from gateway.ecr.uploads import UNBOUNDED, ClientBounds
from gateway.oci import errors as oci
from gateway.oci.backend import Manifest, ReferrersPage, UploadStatus
from gateway.oci.digests import is_digest
from gateway.oci.download_targets import DownloadTargets
from gateway.oci.errors import OciError
from gateway.oci.mediatypes import ParsedManifest
from gateway.oci.offload import off_loop
from gateway.oci.request import Credentials, RequestContext
from gateway.state.events import CacheEvents
from gateway.state.peers import StagedPeers
from gateway.state.sessions import SessionStore

log = logging.getLogger(__name__)


class EcrPublicBackend(EcrBackend):
    kind = "ecr-public"
    # Pulls ask the registry endpoint for every type; the answer is the stored manifest.
    converts_on_accept = False

    def __init__(self, public: EcrPublic, router: Router, clients: ClientFactory,
                 upstream_for: Callable[[str, Credentials | None], Upstream],
                 sessions: SessionStore, staging: StagingStore, policy: RetryPolicy,
                 http: Callable[[], aiohttp.ClientSession],
                 cache: CacheConfig | None = None, events: CacheEvents | None = None,
                 peers: StagedPeers | None = None, *, downloads: DownloadTargets,
                 upload_bounds: ClientBounds = UNBOUNDED,
                 referrers_budget: ReferrersBudget | None = None) -> None:
        super().__init__(router, clients, upstream_for, sessions, staging, policy, http, cache,
                         events, peers, downloads=downloads, upload_bounds=upload_bounds,
                         referrers_budget=referrers_budget)
        self.public = public

    async def _client(self, target: Target) -> Any:
        return await self.public.client(target)

    def route_upstream(self, route: RouteConfig, caller: Credentials | None) -> Upstream:
        return self.public.upstream(caller)

    def _create_params(self, target: Target) -> dict[str, Any]:
        return self.public.create_params(target.route)

    # -- writes -----------------------------------------------------------------------------

    def _writable(self, ctx: RequestContext) -> None:
        """A mirror of others' repositories (``registry_alias: ""``, names carrying the
        alias) takes no writes: reads come from their registry, and a push would land in
        this account's own public registry under a name that says otherwise."""
        if self._target(ctx).route.registry_alias == "":
            raise OciError(oci.UNSUPPORTED, {"method": "push or delete"},
                           message="this route mirrors others' ECR Public repositories "
                                   "(registry_alias \"\"): it takes no pushes or deletes")

    async def start_upload(self, ctx: RequestContext) -> UploadStatus:
        self._writable(ctx)
        return await super().start_upload(ctx)

    async def mount_blob(self, ctx: RequestContext, digest: str, source: str) -> bool:
        self._writable(ctx)
        return await super().mount_blob(ctx, digest, source)

    async def put_manifest(self, ctx: RequestContext, reference: str, body: bytes,
                           parsed: ParsedManifest) -> str:
        self._writable(ctx)
        return await super().put_manifest(ctx, reference, body, parsed)

    async def delete_manifest(self, ctx: RequestContext, reference: str) -> None:
        self._writable(ctx)
        await super().delete_manifest(ctx, reference)

    # -- blobs ------------------------------------------------------------------------------

    async def _check_layer(self, target: Target, digest: str) -> int | None:
        if target.route.registry_alias != "":
            return await super()._check_layer(target, digest)
        # A mirror of others' ECR Public repositories: only their endpoint can tell.
        since = self.caches.blob_epoch()
        size = await self.public.blob_size(target, digest)
        if size is not None:
            self.caches.remember_member(target.key, digest, size, since=since)
        return size

    async def _check_layers(self, target: Target, unknown: list[str],
                            sizes: dict[str, int]) -> None:
        if target.route.registry_alias != "":
            await super()._check_layers(target, unknown, sizes)
            return
        for digest in unknown:
            size = await self._check_layer(target, digest)
            if size is not None:
                sizes[digest] = size

    async def _download_url(self, target: Target, digest: str) -> str:
        since = self.caches.blob_epoch()
        url = await self.public.blob_url(target, digest)
        self.caches.remember_url(target.key, digest, url, since=since)
        return url

    # -- manifests --------------------------------------------------------------------------

    async def _fetch_manifest(self, target: Target, reference: str,
                              accepted: tuple[str, ...] | None = None) -> Manifest:
        since = self.caches.version(target.key)  # a change meanwhile: the answer is not kept
        blobs_since = self.caches.blob_epoch()
        try:
            manifest = await self.public.manifest(target, reference)
        except OciError as exc:  # deleted behind the gateway: as ECR's answers (the base's)
            if exc.error is oci.NAME_UNKNOWN:
                await self._found_repository_gone(target)
            elif exc.error is oci.MANIFEST_UNKNOWN:
                await self._found_gone(target, reference)
            raise
        self.caches.remember(target.key, manifest, None if is_digest(reference) else reference,
                             since=since)
        await self._remember_blobs(target, manifest, blobs_since)
        return manifest

    async def _read_manifests(self, target: Target, unknown: list[str],
                              stored: dict[str, Manifest]) -> None:
        for digest in unknown:  # no BatchGetImage: one endpoint read each
            try:
                stored[digest] = await self._fetch_manifest(target, digest)
            except OciError:
                return  # the manifest is refused for this one: reading on only costs calls

    async def _tagged(self, ctx: RequestContext, target: Target, tag: str, body: bytes,
                      parsed: ParsedManifest) -> None:
        if target.route.catalog_data == "from_annotations":
            await self._update_catalog(ctx, target, tag, body, parsed)

    async def _update_catalog(self, ctx: RequestContext, target: Target, tag: str, body: bytes,
                              parsed: ParsedManifest) -> None:
        """PutRepositoryCatalogData from the image's annotations and config."""
        config = b""
        if parsed.blobs and not parsed.children and parsed.blobs[0].size <= 1 << 20:
            with contextlib.suppress(OciError):
                async for chunk in await self._read_chunks(ctx, parsed.blobs[0].digest):
                    config += chunk
        where = f"{await self.public.alias(target)}/{target.repository}".lstrip("/")
        data = catalog.from_image(body, config, f"public.ecr.aws/{where}:{tag}")
        if not data:
            return
        try:
            await self._call(target, "PutRepositoryCatalogData", catalogData=data)
        except OciError as exc:  # the image is pushed; its catalog entry can wait
            log.warning("catalog data of %s not updated: %s", target.repository, exc)

    # -- listings ---------------------------------------------------------------------------

    async def _read_tags(self, target: Target) -> list[str]:
        try:
            return await self.public.tags(target)
        except OciError as exc:  # the endpoint is down or refuses: ask the API
            if target.route.registry_alias == "" or exc.error not in (
                    oci.UNAVAILABLE, oci.TOOMANYREQUESTS):
                raise
        describe = partial(self._call, target, "DescribeImageTags")
        details = await self._pages(describe, "imageTagDetails", maxResults=1000)
        return sorted({d["imageTag"] for d in details})

    async def _read_referrers(self, target: Target, digest: str, artifact_type: str | None,
                              cursor: str | None, lease: Lease) -> ReferrersPage:
        """One page: the registry endpoint's answer, read whole, is at most
        MAX_REFERRERS_BYTES, the room it takes until its referrers are encoded."""
        if cursor is not None:
            raise referrers.invalid_cursor(cursor)
        await lease.take(MAX_REFERRERS_BYTES)
        found = await self.public.referrers(target, digest, artifact_type)
        page = await off_loop(referrers.encode_all, found) if found else []
        lease.keep(sum(len(referrer.encoded) for referrer in page))
        return ReferrersPage(page)
