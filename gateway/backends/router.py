"""Which backend serves a request, and what the gateway's wiring asks of its storage.

Each route (or mirror namespace) names a kind of upstream (``upstream_kind``); each kind is
one backend. The router resolves the request's name and namespace, as the backends do, and
hands the call to that kind's backend; a name no route serves goes to the default backend,
which answers NAME_UNKNOWN with the reason. The catalog is the union of every backend's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Protocol

from gateway.backends.ecr import EcrBackend
from gateway.ecr.routing import Router
from gateway.ecr.tokens import AuthToken
from gateway.oci.backend import (
    BlobLocation,
    Capabilities,
    Manifest,
    ReferrersPage,
    Registry,
    UploadStatus,
)
from gateway.oci.mediatypes import ParsedManifest
from gateway.oci.request import RequestContext


class Storage(Registry, Protocol):
    """The OCI operations, and what the wiring needs beyond them: readiness, upload-session
    expiry, other replicas' cache notices, staged copies for peers, pull-through fills."""

    async def write_upload(self, ctx: RequestContext, upload_id: str,
                           chunks: AsyncIterator[bytes], start: int | None, *,
                           length: int | None = None,
                           kept: Callable[[Path], None] | None = None) -> UploadStatus:
        """As the OCI operation; ``kept`` names a verified copy the caller holds as the
        upload's staged copy (see ``EcrBackend.write_upload``)."""

    async def create_repository_for(self, ctx: RequestContext) -> bool: ...

    async def repository_exists(self, ctx: RequestContext) -> bool: ...

    async def authorization_token(self, region: str) -> AuthToken: ...

    async def expire_idle_uploads(self, idle_seconds: float,
                                  finished_seconds: float | None = None) -> int: ...

    async def drop_orphan_spools(self, idle_seconds: float | None = None) -> int: ...

    def apply_notice(self, kind: str, repo: tuple[str | None, str, str], ref: str) -> None: ...

    def flush_caches(self) -> None: ...

    async def staged_for_peer(self, digest: str, upload: str) -> Path | None: ...

    def spool_for_peer(self, upload: str) -> Path | None: ...


class BackendRouter:
    def __init__(self, router: Router, backends: Sequence[EcrBackend]) -> None:
        self._router = router
        self._default = backends[0]  # the private registry's: unrouted names, tokens
        self._backends = {backend.kind: backend for backend in backends}

    def backend(self, ctx: RequestContext) -> EcrBackend:
        target = self._router.resolve(ctx.name, ctx.ns)
        if target is None:
            return self._default
        return self._backends.get(target.route.upstream_kind, self._default)

    def capabilities(self, ctx: RequestContext) -> Capabilities:
        return self.backend(ctx).capabilities(ctx)

    # -- the OCI operations -----------------------------------------------------------------

    async def stat_blob(self, ctx: RequestContext, digest: str) -> int | None:
        return await self.backend(ctx).stat_blob(ctx, digest)

    async def serves_kept_copy(self, ctx: RequestContext, digest: str) -> bool:
        return await self.backend(ctx).serves_kept_copy(ctx, digest)

    def pulls_through(self, ctx: RequestContext, digest: str) -> bool:
        return False  # storage alone: a pull-through wraps it (gateway/pullthrough/backend.py)

    async def locate_blob(self, ctx: RequestContext, digest: str, *,
                          fresh: bool = False) -> BlobLocation:
        return await self.backend(ctx).locate_blob(ctx, digest, fresh=fresh)

    async def start_upload(self, ctx: RequestContext) -> UploadStatus:
        return await self.backend(ctx).start_upload(ctx)

    async def mount_blob(self, ctx: RequestContext, digest: str, source: str) -> bool:
        return await self.backend(ctx).mount_blob(ctx, digest, source)

    async def upload_status(self, ctx: RequestContext, upload_id: str) -> UploadStatus:
        return await self.backend(ctx).upload_status(ctx, upload_id)

    async def write_upload(self, ctx: RequestContext, upload_id: str,
                           chunks: AsyncIterator[bytes], start: int | None, *,
                           length: int | None = None,
                           kept: Callable[[Path], None] | None = None) -> UploadStatus:
        return await self.backend(ctx).write_upload(ctx, upload_id, chunks, start,
                                                    length=length, kept=kept)

    async def finish_upload(self, ctx: RequestContext, upload_id: str, digest: str) -> None:
        await self.backend(ctx).finish_upload(ctx, upload_id, digest)

    async def cancel_upload(self, ctx: RequestContext, upload_id: str) -> None:
        await self.backend(ctx).cancel_upload(ctx, upload_id)

    async def get_manifest(self, ctx: RequestContext, reference: str,
                           accepted: tuple[str, ...] | None = None) -> Manifest:
        return await self.backend(ctx).get_manifest(ctx, reference, accepted)

    async def put_manifest(self, ctx: RequestContext, reference: str, body: bytes,
                           parsed: ParsedManifest) -> str:
        return await self.backend(ctx).put_manifest(ctx, reference, body, parsed)

    async def delete_manifest(self, ctx: RequestContext, reference: str) -> None:
        await self.backend(ctx).delete_manifest(ctx, reference)

    async def list_tags(self, ctx: RequestContext) -> list[str]:
        return await self.backend(ctx).list_tags(ctx)

    async def list_repositories(self, ctx: RequestContext) -> list[str]:
        if len(self._backends) == 1:
            return await self._default.list_repositories(ctx)
        names: set[str] = set()
        for backend in self._backends.values():
            names.update(await backend.list_repositories(ctx))
        return sorted(names)

    async def referrers(self, ctx: RequestContext, digest: str, artifact_type: str | None,
                        cursor: str | None = None) -> ReferrersPage:
        return await self.backend(ctx).referrers(ctx, digest, artifact_type, cursor)

    # -- the wiring's -----------------------------------------------------------------------

    async def create_repository_for(self, ctx: RequestContext) -> bool:
        return await self.backend(ctx).create_repository_for(ctx)

    async def repository_exists(self, ctx: RequestContext) -> bool:
        return await self.backend(ctx).repository_exists(ctx)

    async def authorization_token(self, region: str) -> AuthToken:
        return await self._default.authorization_token(region)

    async def expire_idle_uploads(self, idle_seconds: float,
                                  finished_seconds: float | None = None) -> int:
        # One session store behind every backend: one sweep covers them all.
        return await self._default.uploads.expire_idle(idle_seconds, finished_seconds)

    async def drop_orphan_spools(self, idle_seconds: float | None = None) -> int:
        return await self._default.uploads.drop_orphan_spools(idle_seconds)

    def apply_notice(self, kind: str, repo: tuple[str | None, str, str], ref: str) -> None:
        for backend in self._backends.values():
            backend.apply_notice(kind, repo, ref)

    def flush_caches(self) -> None:
        for backend in self._backends.values():
            backend.caches.flush()
            backend.listings.forget_all()  # tag lists and catalogs are answers too

    async def staged_for_peer(self, digest: str, upload: str) -> Path | None:
        # Staged copies are this replica's, by digest, whichever backend received them.
        return await self._default.staged_for_peer(digest, upload)

    def spool_for_peer(self, upload: str) -> Path | None:
        # Spools are this replica's, by upload id, whichever backend the upload is for.
        return self._default.spool_for_peer(upload)
