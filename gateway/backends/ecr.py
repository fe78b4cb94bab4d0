"""The OCI ``Registry`` backend on ECR: each operation names the ECR actions it performs.

It serves the routes of one kind (``upstream_kind: ecr``); ECR Public shares its actions and
overrides what differs (gateway/backends/ecr_public.py). The pieces it is built from (the
upload pipeline, the pull caches, the listings, the call policy) live in gateway/ecr/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Hashable,
)
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import aiohttp
from cachetools import LRUCache

from gateway.config import CacheConfig, RouteConfig
from gateway.ecr import referrers
from gateway.ecr.adopt import adopt_spool, settle_spool
from gateway.ecr.caches import PullCaches
from gateway.ecr.calls import call, counted
from gateway.ecr.clients import ClientFactory, Upstream
from gateway.ecr.errors import EcrError
from gateway.ecr.listings import Listings, catalog_key, tags_key
from gateway.ecr.referrers_budget import Lease, ReferrersBudget, SharedPages
from gateway.ecr.retry import RetryPolicy
from gateway.ecr.routing import Router, Target
from gateway.ecr.singleflight import SingleFlight
from gateway.ecr.staging import StagingStore, _has_digest, repository_key
from gateway.ecr.tokens import AuthToken, TokenCache
from gateway.ecr.uploads import PUSH_PROOF_SECONDS, UNBOUNDED, ClientBounds, UploadManager
from gateway.oci import errors as oci
from gateway.oci.backend import (
    BlobLocation,
    Capabilities,
    Manifest,
    ReferrersPage,
    UploadStatus,
)
from gateway.oci.digests import EMPTY_SHA256, is_digest, sha256_digest
from gateway.oci.download_targets import (
    DownloadRefused,
    DownloadTargets,
    download_refused,
    storage_unreachable,
)
from gateway.oci.errors import OciError
from gateway.oci.mediatypes import (
    MANIFEST_TYPES,
    OCI_INDEX,
    Descriptor,
    ParsedManifest,
    parse_manifest,
)
from gateway.oci.offload import off_loop
from gateway.oci.request import Credentials, RequestContext
from gateway.state.events import CacheEvents, NoEvents
from gateway.state.peers import PROOF_HEADER, StagedPeers
from gateway.state.sessions import SESSION_ID, SessionStore

log = logging.getLogger(__name__)

# GetDownloadUrlForLayer's answers for a layer the repository holds but serves to no one yet
# (uploaded, no image references it): the API reference names LayerInaccessibleException
# ("not associated with an image"), LayersNotFoundException is what has been seen.
NOT_SERVED_YET = frozenset({"LayersNotFoundException", "LayerInaccessibleException"})
_T = TypeVar("_T")


def _image_id(reference: str) -> dict[str, str]:
    return {"imageDigest": reference} if is_digest(reference) else {"imageTag": reference}


class EcrBackend:
    # The routes this backend serves (RouteConfig.upstream_kind).
    kind = "ecr"
    # Whether a manifest read names the types the client accepts (ECR may convert to one).
    converts_on_accept = True

    def __init__(self, router: Router, clients: ClientFactory,
                 upstream_for: Callable[[str, Credentials | None], Upstream],
                 sessions: SessionStore,
                 staging: StagingStore, policy: RetryPolicy,
                 http: Callable[[], aiohttp.ClientSession],
                 cache: CacheConfig | None = None, events: CacheEvents | None = None,
                 peers: StagedPeers | None = None, *, downloads: DownloadTargets,
                 upload_bounds: ClientBounds = UNBOUNDED,
                 referrers_budget: ReferrersBudget | None = None) -> None:
        self._router = router
        self._clients = clients
        self._upstream_for = upstream_for
        self._staging = staging
        self._policy = policy
        self._http = http
        self._downloads = downloads  # where download URLs may lead (gateway/oci/...)
        # Pull path: answers cached per ECR repository, identical misses made once.
        self.caches = PullCaches(cache or CacheConfig())
        self._events: CacheEvents = events or NoEvents()  # tells the other replicas
        self.peers = peers  # staged copies on other replicas (shared state only)
        # Upload → its spool's size when this replica last held every byte of it: continued
        # here again, only what other replicas received since is copied (gateway/ecr/adopt.py).
        self._held_spools: LRUCache[str, int] = LRUCache(maxsize=10_000)
        self.listings = Listings.for_config(cache or CacheConfig())  # tags and catalog pages
        self._manifest_calls: SingleFlight[Manifest] = SingleFlight("manifest")
        self._url_calls: SingleFlight[str] = SingleFlight("download_url")
        self._stat_calls: SingleFlight[int | None] = SingleFlight("layer_check")
        self._keep_calls: SingleFlight[None] = SingleFlight("keep_spool")  # staged_for_peer
        # Mounts copying a blob into a repository, by (repository, digest): those asking for
        # the same one at once wait for the copy in progress instead of making their own.
        self._mounts: dict[Hashable, _MountTurn] = {}
        # A referrers page holds each referrer with its manifest's annotations (up to 4 MiB
        # apiece): readers of the same page at once share one read, and every read and page
        # held counts against one budget.
        self._referrers_reads = SharedPages(referrers_budget or ReferrersBudget(0))
        # An identity's right to push, like its other answers, is trusted only as long as
        # a manifest: IAM withdrawing it ends its use of others' uploads within that bound.
        revalidate = (cache or CacheConfig()).manifest_revalidate_seconds
        self.uploads = UploadManager(sessions, staging, policy, self._client,
                                     bounds=upload_bounds,
                                     push_proof_seconds=min(PUSH_PROOF_SECONDS, revalidate))
        self.tokens = TokenCache(self._fetch_token)

    def apply_notice(self, kind: str, repo: tuple[str | None, str, str], ref: str) -> None:
        """Another replica moved or removed a tag (``tag``), deleted an image or found it
        gone (``manifest``), created a repository (``repository``) or found one gone
        (``repository_gone``): drop what this one cached for it."""
        if kind == "repository":
            self.listings.forget_catalogs()
            return
        if kind == "tag":
            self.caches.forget_tag(repo, ref)
        elif kind == "manifest":
            self.caches.forget_manifest(repo, ref)
        elif kind == "repository_gone":
            self.caches.found_repository_gone(repo)
        self.listings.forget_tags(repo)  # every kept tag list of the repository is read again

    def capabilities(self, ctx: RequestContext) -> Capabilities:
        return ECR_CAPABILITIES

    async def authorization_token(self, region: str) -> AuthToken:
        """The ECR registry credential for this gateway's identity in ``region`` (cached)."""
        upstream = self._upstream_for(region, None)
        return await self.tokens.get((upstream.access_key_id, upstream.endpoint_url, region))

    async def _fetch_token(self, key: Any) -> AuthToken:
        region = key[2]
        client = await self._clients.client(self._upstream_for(region, None))
        answer = await call(client, "GetAuthorizationToken", self._policy)
        return AuthToken.from_ecr(answer["authorizationData"][0], time.time())

    # -- plumbing ---------------------------------------------------------------------------

    def _target(self, ctx: RequestContext) -> Target:
        name, ns = ctx.name, ctx.ns
        target = self._router.resolve(name, ns)
        if target is None:
            detail = {"name": name, "ns": ns} if ns else {"name": name}
            raise OciError(oci.NAME_UNKNOWN, detail,
                           message=self._router.unrouted_reason(name, ns))
        if target.route.upstream_kind != self.kind:
            # Another backend's repository (a mount's source on an ECR Public route, say):
            # never read as this registry's repository of the same ECR name.
            raise OciError(oci.NAME_UNKNOWN, {"name": name},
                           message="this name is served by another registry")
        # Checked after routing: prefixes can make a name too long, or a valid one of its own.
        return target.check_name().for_request(ctx)

    async def _client(self, target: Target) -> Any:
        client = await self._clients.client(self._upstream_for(target.region, target.caller))
        return counted(client, target.calls)

    async def _call(self, target: Target, action: str, **params: Any) -> dict[str, Any]:
        return await call(await self._client(target), action, self._policy, **target.ids(),
                          **params)

    async def _create_repository(self, target: Target) -> bool:
        """CreateRepository, then the route's repository policy and lifecycle policy; False
        when it existed already."""
        settings = target.route.repository
        try:
            await self._call(target, "CreateRepository", **self._create_params(target))
            self.listings.forget_catalogs()
            log.info("created repository %s (%s)", target.repository, target.route.upstream_kind)
        except EcrError as exc:
            if exc.code != "RepositoryAlreadyExistsException":
                raise
            return False  # whoever created it applied the settings
        # The other replicas' kept catalogs lack it: the next page they answer must not.
        await self._events.publish("repository", target.key, target.repository)
        policy, lifecycle = settings.policy_text(), settings.lifecycle_text()
        if policy is not None:
            await self._call(target, "SetRepositoryPolicy", policyText=policy)
        if lifecycle is not None:
            await self._call(target, "PutLifecyclePolicy", lifecyclePolicyText=lifecycle)
        return True

    def _create_params(self, target: Target) -> dict[str, Any]:
        """CreateRepository's parameters from the route's repository settings."""
        settings = target.route.repository
        encryption: dict[str, str] = {"encryptionType": settings.encryption_type}
        if settings.kms_key:
            encryption["kmsKey"] = settings.kms_key
        return {"imageTagMutability": settings.image_tag_mutability,
                "imageScanningConfiguration": {"scanOnPush": settings.scan_on_push},
                "encryptionConfiguration": encryption,
                "tags": [{"Key": k, "Value": v} for k, v in settings.tags.items()]}

    async def create_repository_for(self, ctx: RequestContext) -> bool:
        """Create the repository ``name`` maps to with its route's settings, whatever the
        route says of clients' pushes (pull-through fills it); one that exists is kept
        (False)."""
        return await self._create_repository(self._target(ctx))

    async def repository_exists(self, ctx: RequestContext) -> bool:
        """Whether ECR holds the repository ``name`` maps to (one DescribeRepositories)."""
        target = self._target(ctx)
        params = {"registryId": target.route.registry_id} if target.route.registry_id else {}
        try:
            await call(await self._client(target), "DescribeRepositories", self._policy,
                       repositoryNames=[target.repository], **params)
        except EcrError as exc:
            if exc.code != "RepositoryNotFoundException":
                raise
            return False
        return True

    async def _creating(self, target: Target, action: str, **params: Any) -> dict[str, Any]:
        """Call an action that needs the repository, creating it first if the route says so."""
        try:
            return await self._call(target, action, **params)
        except EcrError as exc:
            if exc.code != "RepositoryNotFoundException" or not target.route.create_on_push:
                raise
        await self._create_repository(target)
        return await self._call(target, action, **params)

    # -- blobs ------------------------------------------------------------------------------

    async def stat_blob(self, ctx: RequestContext, digest: str) -> int | None:
        target = self._target(ctx)
        if digest == EMPTY_SHA256:
            return 0
        if not digest.startswith("sha256:"):
            return None
        known = self.caches.member_size(target.key, digest)
        if known is not None:
            return known
        return await self._stat_calls.do(self._blob_call(target, digest),
                                         lambda: self._check_layer(target, digest))

    def _blob_call(self, target: Target, digest: str) -> Hashable:
        """What reads of a blob's answers from ECR share a call by: a call made before an
        image of the repository was deleted answers no read that starts after the delete
        (it may serve the deleted image's layer)."""
        return target.key, digest, self.caches.last_deletion(target.key)

    async def _check_layer(self, target: Target, digest: str) -> int | None:
        since = self.caches.blob_epoch()  # an image deleted meanwhile: the answer is not kept
        answer = await self._call(target, "BatchCheckLayerAvailability", layerDigests=[digest])
        for layer in answer.get("layers", []):
            if layer.get("layerAvailability") == "AVAILABLE":
                size = int(layer.get("layerSize", 0))
                self.caches.remember_member(target.key, digest, size, since=since)
                return size
        return None

    async def serves_kept_copy(self, ctx: RequestContext, digest: str) -> bool:
        """Whether a read of ``digest`` may be answered from a copy kept by digest: only
        if ECR serves it to this caller now. ECR serves a layer only while an image of the
        repository references it, and a layer check (:meth:`stat_blob`) goes on finding
        one whose images were deleted (a layer deleted for the secret it held, say). A blob
        held but not served is read as :meth:`locate_blob` says: a staged copy of a blob
        pushed but not referenced yet, or ECR's refusal."""
        target = self._target(ctx)
        if digest == EMPTY_SHA256:
            return True
        # An image naming the blob says ECR serves it, but to a caller's own keys only if
        # they may download layers too (reading manifests, BatchGetImage, is another right):
        # for those, ECR's download URL, kept or asked for, is the proof.
        if target.caller is None and self.caches.referenced(target.key, digest):
            return True
        if self.caches.url(target.key, digest) is not None:
            return True
        try:
            await self._url_calls.do(self._blob_call(target, digest),
                                     lambda: self._download_url(target, digest))
            return True  # its URL is kept for the read that follows a miss
        except EcrError as exc:
            if exc.code not in NOT_SERVED_YET:
                raise
        except OciError as exc:  # an ECR Public endpoint's answer
            if exc.error is not oci.BLOB_UNKNOWN:
                raise
        return False

    async def locate_blob(self, ctx: RequestContext, digest: str, *,
                          fresh: bool = False) -> BlobLocation:
        target = self._target(ctx)
        if digest == EMPTY_SHA256:
            return BlobLocation(0, path=self._staging.empty)
        if not fresh:
            cached = self.caches.url(target.key, digest)
            if cached is not None:
                return BlobLocation(-1, url=cached)
        staged = await self._staging.find(digest)
        if staged is not None:
            size = await self.stat_blob(ctx, digest)  # is it in *this* repository?
            if size is not None and await self._may_download(target, digest):
                return BlobLocation(size, path=staged)
        if not digest.startswith("sha256:"):
            raise OciError(oci.BLOB_UNKNOWN, {"digest": digest})
        try:
            url = await self._url_calls.do(self._blob_call(target, digest),
                                           lambda: self._download_url(target, digest))
        except EcrError as exc:
            # Uploaded but not referenced yet: another replica may hold it staged.
            if exc.code not in NOT_SERVED_YET or self.peers is None:
                raise
            found = await self._peer_copy(ctx, digest)
            if found is None:
                raise
            return found
        return BlobLocation(-1, url=url)

    async def _may_download(self, target: Target, digest: str) -> bool:
        """Whether the identity ``target`` signs with may download ``digest`` from its
        repository, before a copy held here is served to it: a layer check
        (BatchCheckLayerAvailability) says the repository holds the blob, not that this
        identity may read its bytes. Callers' own keys (auth.mode aws) are asked
        GetDownloadUrlForLayer, whose refusal stands; its answer for a layer no image
        references yet is given only to an identity allowed to download it. The gateway's
        own identity is not asked (the access rules decided)."""
        if target.caller is None or self.caches.url(target.key, digest) is not None:
            return True
        try:
            await self._url_calls.do(self._blob_call(target, digest),
                                     lambda: self._download_url(target, digest))
        except EcrError as exc:
            if exc.code not in NOT_SERVED_YET:
                raise
        return True

    async def _peer_copy(self, ctx: RequestContext, digest: str) -> BlobLocation | None:
        assert self.peers is not None
        try:
            holders = await self.peers.holders(digest)
        except OciError:
            # Redis cannot say who holds it: 503, if the repository holds the layer (a 404
            # would tell the client that a blob it was told is stored is not).
            if await self.stat_blob(ctx, digest) is None:
                return None
            raise
        if not holders:
            return None
        size = await self.stat_blob(ctx, digest)  # is it in *this* repository?
        if size is None:
            return None
        url, upload = holders[0]
        if url == self.peers.self_url:  # the spool of an upload finished on another replica
            path = await self.staged_for_peer(digest, upload)
            return BlobLocation(size, path=path) if path is not None else None
        query = f"?upload={upload}" if upload else ""
        return BlobLocation(size, url=f"{url}/_peer/staged/{digest}{query}",
                            peer_proof=await self.peers.proof(digest))

    async def staged_for_peer(self, digest: str, upload: str) -> Path | None:
        """This replica's staged copy of ``digest`` for a peer (which proved itself): kept
        by digest, or the finished spool of ``upload``, kept now if it hashes to it."""
        found = await self._staging.find(digest)
        if found is not None or not SESSION_ID.fullmatch(upload):
            return found
        # The peer reading the blob and the replica that finished the upload (its
        # settle_spool, gateway/ecr/adopt.py) ask at once: one keeping of a spool at a time,
        # which the others wait for. Two at once would make the same link beside the spool
        # (one failing on it), or one would find neither the spool (the other dropped it)
        # nor the staged blob (not renamed into place yet) and answer 404.
        # (Shielded: a peer gone away does not stop the keeping.)
        await self._keep_calls.do((digest, upload), lambda: self._keep_spool(digest, upload))
        return await self._staging.find(digest)

    async def _keep_spool(self, digest: str, upload: str) -> None:
        spool = self._staging.spool_path(upload)
        spooled = await asyncio.to_thread(_size_of, spool)
        # Kept only once its bytes hash to the digest (ECR checked what it received).
        with contextlib.suppress(FileNotFoundError):  # a request before this one kept it
            if spooled is not None and await asyncio.to_thread(_has_digest, spool, digest):
                await asyncio.to_thread(self._staging.promote, upload, digest, spooled)
                await asyncio.to_thread(self._staging.discard, upload)  # its upload is over

    async def _download_url(self, target: Target, digest: str) -> str:
        since = self.caches.blob_epoch()
        answer = await self._call(target, "GetDownloadUrlForLayer", layerDigest=digest)
        url = answer["downloadUrl"]
        self.caches.remember_url(target.key, digest, url, since=since)
        return url

    # -- uploads ----------------------------------------------------------------------------

    async def start_upload(self, ctx: RequestContext) -> UploadStatus:
        target = self._target(ctx)
        try:
            session = await self.uploads.start(ctx.name, target, ctx.client)
        except EcrError as exc:
            if exc.code != "RepositoryNotFoundException" or not target.route.create_on_push:
                raise
            await self._create_repository(target)
            session = await self.uploads.start(ctx.name, target, ctx.client)
        return UploadStatus(session.id, session.received)

    async def upload_status(self, ctx: RequestContext, upload_id: str) -> UploadStatus:
        return await self.uploads.status(ctx.name, upload_id, ctx.client, self._target(ctx))

    async def write_upload(self, ctx: RequestContext, upload_id: str, chunks: AsyncIterator[bytes],
                           start: int | None, *, length: int | None = None,
                           kept: Callable[[Path], None] | None = None) -> UploadStatus:
        """``kept``: the caller holds the whole blob, verified, in a file of its own (a
        pull-through's spool) and names it with this as the upload's staged copy (a link),
        so that its bytes are not written a second time; only for a new upload written
        whole in this one call."""
        if not SESSION_ID.fullmatch(upload_id):  # never made here: no session, no spool
            raise OciError(oci.BLOB_UPLOAD_UNKNOWN, {"upload": upload_id[:80]})
        if self.peers is not None:  # the request before may have gone to another replica
            await adopt_spool(self.peers, self._http(), self._staging.spool_path(upload_id),
                              upload_id, partial(self._received, ctx, upload_id),
                              self._held_spools.get(upload_id))
        staged = kept is not None and start == 0 and await self._stage_kept(upload_id, kept)
        status = await self.uploads.write(ctx.name, upload_id, self._target(ctx), chunks, start,
                                          staged=staged, client=ctx.client, length=length)
        if self.peers is not None and await asyncio.to_thread(
                _size_of, self._staging.spool_path(upload_id)) == status.received:
            await self.peers.note_spool(upload_id)  # every byte so far is staged here
            self._held_spools[upload_id] = status.received
        return status

    async def _received(self, ctx: RequestContext, upload_id: str) -> int:
        """What the upload holds, as this request's client may learn it: one that may not
        use the upload is refused here, before any of its bytes is copied to this replica."""
        return (await self.upload_status(ctx, upload_id)).received

    async def _stage_kept(self, upload_id: str, kept: Callable[[Path], None]) -> bool:
        """The caller's copy as the upload's staging spool; False: spooled as usual."""
        spool = self._staging.spool_path(upload_id)
        try:
            await asyncio.to_thread(kept, spool)
        except OSError as exc:
            log.info("upload %s: the blob's own copy could not be staged (%s); writing one",
                     upload_id, exc)  # keep_as leaves no partial file behind
            return False
        return True

    def spool_for_peer(self, upload: str) -> Path | None:
        """The spool of an upload in progress, for the peer continuing it."""
        path = self._staging.spool_path(upload) if SESSION_ID.fullmatch(upload) else None
        return path if path is not None and path.is_file() else None

    async def finish_upload(self, ctx: RequestContext, upload_id: str, digest: str) -> None:
        target = self._target(ctx)
        self._held_spools.pop(upload_id, None)
        # Who the other replicas are told holds the blob, and what that holder's entry named
        # before (another upload of the blob through it: put back if these bytes prove wrong).
        holders: list[tuple[str, str | None]] = []

        async def findable(size: int) -> None:
            holder = await self._staged_holder(upload_id, digest, size)
            if holder is not None:
                assert self.peers is not None
                before = await self.peers.record(digest, holder, upload_id)  # or 503: no 201
                holders.append((holder, before))

        try:
            size = await self.uploads.finish(ctx.name, upload_id, target, digest, ctx.client,
                                             findable=None if self.peers is None else findable)
        except OciError as exc:
            if holders and exc.error is oci.DIGEST_INVALID:  # its bytes are not the digest
                assert self.peers is not None
                await self.peers.take_back(digest, holders[0][0], upload_id, holders[0][1])
            raise
        if size is not None:  # clients check a blob right after pushing it: no upstream call
            self.caches.remember_member(target.key, digest, size)
        if self.peers is not None and holders and holders[0][0] != self.peers.self_url:
            settle_spool(self.peers, self._http(), holders[0][0], digest, upload_id)

    async def _staged_holder(self, upload_id: str, digest: str, size: int) -> str | None:
        """The replica the others will read the finished blob from until a manifest
        references it: this one if its spool holds every byte (or the digest is staged here
        already), else the one the session names as holding every byte (503 when Redis
        cannot tell), or none (the bytes went through several replicas)."""
        assert self.peers is not None
        here = self.peers.self_url
        if here is not None and (
                await asyncio.to_thread(self._staging.holds, upload_id, size)
                or await self._staging.find(digest) is not None):
            return here
        holder = await self.peers.spool_holder(upload_id, strict=True)
        return holder if holder != here else None

    async def cancel_upload(self, ctx: RequestContext, upload_id: str) -> None:
        self._held_spools.pop(upload_id, None)
        await self.uploads.cancel(ctx.name, upload_id, ctx.client, self._target(ctx))

    async def mount_blob(self, ctx: RequestContext, digest: str, source: str) -> bool:
        if await self._holds_blob(ctx, digest):
            return True
        try:
            if await self.stat_blob(ctx.for_name(source), digest) is None:
                return False
        except OciError:
            return False  # not readable there: the client uploads it instead
        # A mount is a copy (ECR has no cross-repository mount): one at a time per
        # repository and blob, each after the one before looks whether the blob arrived.
        # Otherwise N requests asking at once for the same mount made N copies, each a full
        # download and upload of the blob (20 of a 24 MiB layer: 480 MiB each way).
        key = (self._target(ctx).key, digest)
        turn = self._mounts.setdefault(key, _MountTurn())
        turn.users += 1
        try:
            async with turn.lock:
                if turn.copied and await self._holds_blob(ctx, digest):
                    return True
                copied = await self._copy_blob(ctx, digest, source)
                turn.copied = turn.copied or copied
                return copied
        finally:
            turn.users -= 1
            if not turn.users and self._mounts.get(key) is turn:
                del self._mounts[key]

    async def _holds_blob(self, ctx: RequestContext, digest: str) -> bool:
        try:
            return await self.stat_blob(ctx, digest) is not None
        except EcrError as exc:  # a target this push is about to create has nothing yet
            if exc.code != "RepositoryNotFoundException":
                raise
            return False

    async def _copy_blob(self, ctx: RequestContext, digest: str, source: str) -> bool:
        """Copy blob ``digest`` from ``source`` into ``ctx``'s repository; False when the
        copy cannot be made (the client uploads the blob itself)."""
        try:
            chunks = await self._read_chunks(ctx.for_name(source), digest)
        except OciError:
            return False  # not readable there: the client uploads it instead
        status = await self.start_upload(ctx)
        try:
            await self.write_upload(ctx, status.upload_id, chunks, 0)
            await self.finish_upload(ctx, status.upload_id, digest)
        except BaseException as exc:
            with contextlib.suppress(OciError):  # the failure may have closed it already
                await self.uploads.cancel(ctx.name, status.upload_id)
            if isinstance(exc, OciError):
                return False  # the copy broke off (its holder refused, say): an upload then
            raise
        return True

    async def _read_chunks(self, ctx: RequestContext, digest: str) -> AsyncIterator[bytes]:
        location = await self.locate_blob(ctx, digest)
        if location.path is not None:
            try:
                return _file_chunks(await asyncio.to_thread(open, location.path, "rb"))
            except FileNotFoundError:  # removed since it was found: ask ECR
                location = await self.locate_blob(ctx, digest)
                if location.path is not None:
                    return _file_chunks(await asyncio.to_thread(open, location.path, "rb"))
        assert location.url is not None
        if location.peer_proof:
            return _url_chunks(partial(self._http().get, allow_redirects=False), location.url,
                               {PROOF_HEADER: location.peer_proof})
        return _url_chunks(self._downloads.get, location.url, {})

    # -- manifests --------------------------------------------------------------------------

    async def get_manifest(self, ctx: RequestContext, reference: str,
                           accepted: tuple[str, ...] | None = None) -> Manifest:
        target = self._target(ctx)
        digest = reference if is_digest(reference) else self.caches.tag(
            target.key, reference, accepted)
        if digest is not None:
            cached = self.caches.manifest(target.key, digest)
            if cached is not None and (accepted is None or cached.media_type in accepted):
                return cached
        if accepted is None or not self.converts_on_accept:
            # A read shares no call made before a change of the repository (a tag moved, an
            # image deleted): it would be answered what ECR held before that change.
            since = self.caches.version(target.key)
            manifest = await self._manifest_calls.do(
                (target.key, reference, None, since),
                lambda: self._fetch_manifest(target, reference))
            if accepted is not None and manifest.media_type not in accepted:
                raise OciError(oci.MANIFEST_UNKNOWN, {"reference": reference,
                                                      "stored_as": manifest.media_type},
                               message="manifest not available in an accepted media type")
            return manifest
        return await self._manifest_calls.do(
            (target.key, reference, accepted, self.caches.version(target.key)),
            lambda: self._fetch_manifest(target, reference, accepted))

    async def _fetch_manifest(self, target: Target, reference: str,
                              accepted: tuple[str, ...] | None = None) -> Manifest:
        # ECR is asked for the types the client accepts. When those narrow it, ECR may convert
        # a tag pull (OCI → Docker schema 2, a new digest), so such an answer is what the tag
        # points to for clients with the same Accept set only, never for every other client.
        since = self.caches.version(target.key)  # a change meanwhile: the answer is not kept
        blobs_since = self.caches.blob_epoch()
        try:
            answer = await self._call(target, "BatchGetImage", imageIds=[_image_id(reference)],
                                      acceptedMediaTypes=list(accepted or MANIFEST_TYPES))
        except EcrError as exc:
            if exc.code == "RepositoryNotFoundException":
                await self._found_repository_gone(target)
            raise
        images = answer.get("images", [])
        if not images:
            failures = answer.get("failures", [])
            code = failures[0].get("failureCode", "") if failures else ""
            if code == "ImageNotFound":  # or not of the types asked for
                await self._found_gone(target, reference, accepted or MANIFEST_TYPES)
            raise OciError(oci.MANIFEST_UNKNOWN, {"reference": reference, "ecr_failure": code})
        image = images[0]
        body = image["imageManifest"].encode()
        digest = image.get("imageId", {}).get("imageDigest") or sha256_digest(body)
        media_type = image.get("imageManifestMediaType") or "application/json"
        manifest = Manifest(body, media_type, digest)
        tag = None if is_digest(reference) else reference
        self.caches.remember(target.key, manifest, tag, accepted, since=since)
        await self._remember_blobs(target, manifest, blobs_since)
        return manifest

    async def _found_gone(self, target: Target, reference: str,
                          asked: Collection[str] | None = None) -> None:
        """ECR has no image ``reference`` (deleted behind the gateway) of the media types
        ``asked`` (None: any): what was cached of it here and on the other replicas is
        dropped as for a delete through the gateway (a tag's: of the image it was cached as
        pointing to, which may be gone with it)."""
        digests = ({reference} if is_digest(reference)
                   else self.caches.tagged(target.key, reference))
        for digest in self.caches.found_gone(target.key, digests, asked):
            self.listings.forget_tags(target.key)
            await self._events.publish("manifest", target.key, digest)

    async def _found_repository_gone(self, target: Target) -> None:
        """ECR has no repository ``target``: likewise for every answer cached of it."""
        if self.caches.found_repository_gone(target.key):
            self.listings.forget_tags(target.key)
            await self._events.publish("repository_gone", target.key, target.repository)

    async def _remember_blobs(self, target: Target, manifest: Manifest, since: int) -> None:
        """ECR holds an image only with all of its layers: the repository has these blobs
        (as of ``since``, the blob epoch the manifest's read started from)."""
        try:
            parsed = await off_loop(parse_manifest, manifest.body, manifest.media_type)
        except OciError:
            return  # not an image manifest the gateway understands; nothing learned
        for blob in parsed.blobs:
            self.caches.remember_member(target.key, blob.digest, blob.size, since=since,
                                        referenced=True)

    async def put_manifest(self, ctx: RequestContext, reference: str, body: bytes,
                           parsed: ParsedManifest) -> str:
        target = self._target(ctx)
        text, digest = await off_loop(_text_and_digest, body)
        params: dict[str, Any] = {"imageManifest": text,
                                  "imageManifestMediaType": parsed.media_type}
        if is_digest(reference):
            params["imageDigest"] = reference
        else:
            params["imageTag"] = reference
        await self._check_references(target, parsed)
        try:
            await self._creating(target, "PutImage", **params)
        except EcrError as exc:
            # Same manifest, same tag: ECR calls it a conflict, OCI an idempotent success
            # (it is also what a retried PutImage that did land looks like).
            if exc.code != "ImageAlreadyExistsException":
                raise
        # Reads of the repository that ECR answered before this put keep nothing (a tag's
        # old digest would otherwise replace the new one when they come in after it).
        self.caches.changed(target.key)
        if not is_digest(reference):  # every identity's answer for the tag moved with it
            self.caches.forget_tag(target.key, reference)
        self.caches.remember(target.key, Manifest(body, parsed.media_type, digest),
                             None if is_digest(reference) else reference)
        if not is_digest(reference):
            self.listings.add(tags_key(target), reference)
            self.listings.forget_tags(target.key, keep=True)  # other identities' lists
            # the tag may have moved: the others forget it
            await self._events.publish("tag", target.key, reference)
        if not is_digest(reference):
            await self._tagged(ctx, target, reference, body, parsed)
        # ECR serves referenced layers itself now. Unlinking a large file frees its pages,
        # which takes long enough to stall every other request if done on the event loop.
        await asyncio.to_thread(self._staging.forget, [blob.digest for blob in parsed.blobs],
                                repository_key(target.registry_id, target.repository))
        return digest

    async def _check_references(self, target: Target, parsed: ParsedManifest) -> None:
        """Every descriptor of the manifest names what the repository holds, at its size.

        Blob sizes come from what this gateway learned (its own uploads, HEAD answers, images
        it served): a push through it costs no extra call. Others take one
        BatchCheckLayerAvailability for all of them. Index children are manifests: checked
        against the manifest cache (children pushed just before through this gateway), else
        with one BatchGetImage for the rest. Either asks at most 100 at a time, and no more
        once one is missing: a manifest of 4 MiB names 25,000 descriptors, and one that
        names what the repository lacks would cost 250 calls to be refused. A subject need
        not exist (distribution-spec).
        """
        sizes = await self._blob_sizes(target, [blob.digest for blob in parsed.blobs])
        # Named only when refused: a manifest may hold tens of thousands that pass.
        for i, blob in enumerate(parsed.blobs):
            size = sizes.get(blob.digest)
            if not _matches(blob, size, None):
                _check_stored("config" if i == 0 else f"layers[{i - 1}]", blob, size, None)
        if parsed.children:
            stored = await self._stored_manifests(target, [m.digest for m in parsed.children])
            for i, child in enumerate(parsed.children):
                found = stored.get(child.digest)
                size = None if found is None else len(found.body)
                media_type = None if found is None else found.media_type
                if not _matches(child, size, media_type):
                    _check_stored(f"manifests[{i}]", child, size, media_type)

    async def _blob_sizes(self, target: Target, digests: list[str]) -> dict[str, int]:
        sizes, unknown = _split_known(digests, lambda digest: 0 if digest == EMPTY_SHA256
                                      else self.caches.member_size(target.key, digest))
        if unknown:
            await self._check_layers(target, unknown, sizes)
        return sizes

    async def _check_layers(self, target: Target, unknown: list[str],
                            sizes: dict[str, int]) -> None:
        """Add the sizes of the layers of ``unknown`` the repository holds to ``sizes``, up
        to the first batch that lacks one."""
        since = self.caches.blob_epoch()
        async with contextlib.aclosing(self._batched(
                target, "BatchCheckLayerAvailability", "layerDigests", unknown)) as batches:
            async for asked, answer in batches:
                for layer in answer.get("layers", []):
                    if layer.get("layerAvailability") == "AVAILABLE":
                        size = int(layer.get("layerSize", 0))
                        sizes[layer["layerDigest"]] = size
                        self.caches.remember_member(target.key, layer["layerDigest"], size,
                                                    since=since)
                if any(digest not in sizes for digest in asked):
                    return

    async def _batched(self, target: Target, action: str, field: str, items: list[_T],
                       **params: Any) -> AsyncGenerator[tuple[list[_T], dict[str, Any]], None]:
        """The items asked and the answer of ``action`` on them as ``field``, at most 100 a
        call (ECR's limit); none more once the repository turns out not to exist (a
        repository this push creates holds nothing yet)."""
        for start in range(0, len(items), 100):
            asked = items[start:start + 100]
            try:
                answer = await self._call(target, action, **{field: asked}, **params)
            except EcrError as exc:
                if exc.code == "RepositoryNotFoundException":
                    return
                raise
            yield asked, answer

    async def _stored_manifests(self, target: Target, digests: list[str]) -> dict[str, Manifest]:
        stored, unknown = _split_known(
            digests, lambda digest: self.caches.manifest(target.key, digest))
        if unknown:
            await self._read_manifests(target, unknown, stored)
        return stored

    async def _read_manifests(self, target: Target, unknown: list[str],
                              stored: dict[str, Manifest]) -> None:
        """Add the manifests of ``unknown`` the repository holds to ``stored``, up to the
        first batch that lacks one."""
        since = self.caches.version(target.key)
        async with contextlib.aclosing(self._batched(
                target, "BatchGetImage", "imageIds", [{"imageDigest": d} for d in unknown],
                acceptedMediaTypes=list(MANIFEST_TYPES))) as batches:
            async for asked, answer in batches:
                for image in answer.get("images", []):
                    body = image["imageManifest"].encode()
                    digest = image.get("imageId", {}).get("imageDigest") or sha256_digest(body)
                    manifest = Manifest(body, image.get("imageManifestMediaType") or "", digest)
                    stored[digest] = manifest
                    self.caches.remember(target.key, manifest, since=since)
                if any(image_id["imageDigest"] not in stored for image_id in asked):
                    return

    async def _tagged(self, ctx: RequestContext, target: Target, tag: str, body: bytes,
                      parsed: ParsedManifest) -> None:
        """After a manifest was put under ``tag`` (nothing more in ECR)."""

    async def delete_manifest(self, ctx: RequestContext, reference: str) -> None:
        target = self._target(ctx)
        if not is_digest(reference):
            await self._untag(target, reference)
            self.caches.forget_tag(target.key, reference)
            self.listings.remove(tags_key(target), reference)
            self.listings.forget_tags(target.key, keep=True)  # other identities' lists
            await self._events.publish("tag", target.key, reference)
            return
        # Nothing is forgotten before ECR answers: a deletion counts against every blob
        # answer of the repository (and, beyond CHANGES_KEPT repositories, of all), so one
        # that ECR refuses (denied, no such repository or image) must cost no reader anything.
        try:
            answer = await self._call(target, "BatchDeleteImage",
                                      imageIds=[{"imageDigest": reference}])
            if _referenced_by_index(answer) and await self._drop_holder(target, reference):
                answer = await self._call(target, "BatchDeleteImage",
                                          imageIds=[{"imageDigest": reference}])
        except OciError as exc:
            if isinstance(exc, EcrError) and exc.code == "RepositoryNotFoundException":
                await self._found_repository_gone(target)
            else:
                await self._maybe_deleted(target, reference, exc)
            raise
        try:
            _raise_delete_failures(answer, reference)
        except OciError as exc:
            # Not found: deleted behind the gateway, dropped as such if it was held here.
            if exc.error is oci.MANIFEST_UNKNOWN:
                await self._found_gone(target, reference)
            raise
        # A read made meanwhile may still have found the image: its answer is not kept.
        await self._deleted(target, reference)

    async def _deleted(self, target: Target, digest: str) -> None:
        """Image ``digest`` deleted through this gateway: dropped here and on every replica."""
        self.caches.forget_manifest(target.key, digest)
        self.listings.forget_tags(target.key)  # every tag of the image went with it
        await self._events.publish("manifest", target.key, digest)

    async def _maybe_deleted(self, target: Target, digest: str, failure: OciError) -> None:
        """A delete whose outcome is unknown (an ECR error or no answer) may have landed:
        taken as one if answers of the repository are held, so that a made-up name costs
        nothing however long ECR fails."""
        if failure.status >= 500 and self.caches.held(target.key):
            await self._deleted(target, digest)

    async def _untag(self, target: Target, tag: str) -> None:
        """OCI untag keeps the image; ECR deletes an image with its last tag. So that the
        image is referenced at every moment (a failed call or a dead process in between
        must not lose it), an untagged index holding it is put first, the tag deleted, then
        the holder. ECR keeps an index's child while the index exists (the emulator does;
        *unconfirmed* for ECR itself): if the image is gone all the same, it is put back by
        digest. A holder left by a process that died is dropped by the next delete of
        the image (``_drop_holder``)."""
        manifest = await self._fetch_manifest(target, tag)  # not cached: where it is now
        # From here ECR may change, whatever the outcome; a tag ECR has not (404) changes
        # nothing, and costs reads in flight nothing.
        self.caches.forget_tag(target.key, tag)
        holder = _holder(manifest)
        held = True
        try:
            await self._call(target, "PutImage", imageManifest=holder.body.decode(),
                             imageManifestMediaType=holder.media_type,
                             imageDigest=holder.digest)
        except EcrError as exc:
            if exc.code == "ImageAlreadyExistsException":  # e.g. a left-over holder
                pass
            elif exc.code in _HOLDER_REFUSED:
                # An ECR that will not take such an index: untag the plain way (the image
                # is put back below), with the window that has.
                log.warning("untag of %s without a holder (%s)", tag, exc.code)
                held = False
            else:  # nothing changed yet: the client may simply retry
                raise
        answer = await self._call(target, "BatchDeleteImage", imageIds=[{"imageTag": tag}])
        _raise_delete_failures(answer, tag)
        if held:
            answer = await self._call(target, "BatchDeleteImage",
                                      imageIds=[{"imageDigest": holder.digest}])
            for failure in answer.get("failures", []):
                log.info("holder of %s not deleted: %s", manifest.digest,
                         failure.get("failureCode"))
        try:
            await self._call(target, "DescribeImages",
                             imageIds=[{"imageDigest": manifest.digest}])
        except EcrError as exc:
            if exc.code != "ImageNotFoundException":
                raise
            await self._call(target, "PutImage", imageManifest=manifest.body.decode(),
                             imageManifestMediaType=manifest.media_type,
                             imageDigest=manifest.digest)

    async def _drop_holder(self, target: Target, digest: str) -> bool:
        """Delete the holder an interrupted untag left on ``digest``; whether there was one."""
        try:
            manifest = await self._fetch_manifest(target, digest)
        except OciError:
            return False
        holder = _holder(manifest)
        answer = await self._call(target, "BatchDeleteImage",
                                  imageIds=[{"imageDigest": holder.digest}])
        return not answer.get("failures")

    # -- listings ---------------------------------------------------------------------------

    @staticmethod
    async def _pages(fetch: Callable[..., Awaitable[dict[str, Any]]], key: str,
                     **params: Any) -> list[Any]:
        """Every page of a listing action; ``fetch`` performs one call with the params."""
        items: list[Any] = []
        token: str | None = None
        while True:
            extra = {"nextToken": token} if token else {}
            answer = await fetch(**params, **extra)
            items += answer.get(key, [])
            token = answer.get("nextToken")
            if not token:
                return items

    async def list_tags(self, ctx: RequestContext) -> list[str]:
        """Sorted; kept for paging (gateway/ecr/listings.py)."""
        target = self._target(ctx)
        return await self.listings.get(tags_key(target), partial(self._read_tags, target))

    async def _read_tags(self, target: Target) -> list[str]:
        ids = await self._pages(partial(self._call, target, "ListImages"), "imageIds",
                                filter={"tagStatus": "TAGGED"}, maxResults=1000)
        return sorted({i["imageTag"] for i in ids if i.get("imageTag")})

    async def list_repositories(self, ctx: RequestContext) -> list[str]:
        """Sorted; kept for paging (gateway/ecr/listings.py)."""
        return await self.listings.get(catalog_key(ctx.caller),
                                       partial(self._read_repositories, ctx))

    async def _read_repositories(self, ctx: RequestContext) -> list[str]:
        names: set[str] = set()
        seen: dict[tuple[str | None, str, str], list[str]] = {}
        for route in self._router.routes:
            if route.upstream_kind != self.kind:
                continue  # another backend's
            region = self._router.region_of(route)
            where = (route.registry_id, region, route.upstream_kind)
            if where not in seen:
                client = counted(await self._clients.client(
                    self.route_upstream(route, ctx.caller)), ctx.calls)
                params = {"registryId": route.registry_id} if route.registry_id else {}
                describe = partial(call, client, "DescribeRepositories", self._policy)
                repos = await self._pages(describe, "repositories", maxResults=1000, **params)
                seen[where] = [r["repositoryName"] for r in repos]
            names.update(n for n in (self._router.client_name(route, r) for r in seen[where])
                         if n)
        return sorted(names)

    async def referrers(self, ctx: RequestContext, digest: str, artifact_type: str | None,
                        cursor: str | None = None) -> ReferrersPage:
        target = self._target(ctx)
        return await self._referrers_reads.page(
            (target.key, digest, artifact_type, referrers.position(cursor)), ctx.client,
            lambda lease: self._read_referrers(target, digest, artifact_type, cursor, lease))

    async def _read_referrers(self, target: Target, digest: str, artifact_type: str | None,
                              cursor: str | None, lease: Lease) -> ReferrersPage:
        """A bounded page of them (gateway/ecr/referrers.py), its room held by ``lease``."""
        params: dict[str, Any] = {"subjectId": {"imageDigest": digest},
                                  "maxResults": referrers.PER_CALL}
        if artifact_type:
            params["filter"] = {"artifactTypes": [artifact_type]}

        async def fetch(token: str | None) -> tuple[list[Descriptor], str | None]:
            extra = {"nextToken": token} if token else {}
            try:
                answer = await self._call(target, "ListImageReferrers", **params, **extra)
            except EcrError as exc:
                if token and exc.code in ("InvalidParameterException", "ValidationException"):
                    raise referrers.invalid_cursor(cursor or "") from None
                raise
            return [Descriptor(r["mediaType"], r["digest"], int(r.get("size", 0)),
                               r.get("artifactType"), r.get("annotations") or None)
                    for r in answer.get("referrers", [])], answer.get("nextToken")

        try:
            return await referrers.read_page(fetch, cursor, lease)
        except EcrError as exc:
            # The referrers API never answers 404 (clients would fall back to the tag schema):
            # a repository not created yet has no referrers.
            if exc.code != "RepositoryNotFoundException":
                raise
            lease.release()
            return ReferrersPage([])

    def route_upstream(self, route: RouteConfig, caller: Credentials | None) -> Upstream:
        return self._upstream_for(self._router.region_of(route), caller)


# What ECR stores: sha256 content only (its image and layer digests), no blob on its own
# (layers go with the images that use them), PutImage's imageManifest of at most 4,194,304
# characters.
ECR_CAPABILITIES = Capabilities(
    digest_algorithms=frozenset({"sha256"}), blob_delete=False,
    blob_delete_refusal="ECR removes layers with the images that use them",
    max_manifest_bytes=4 * 1024 * 1024)

HOLDER_ANNOTATION = "ecr-gateway.untag.holds"


def _split_known(digests: list[str], known: Callable[[str], _T | None]
                 ) -> tuple[dict[str, _T], list[str]]:
    """What ``known`` already answers for ``digests`` (each once), and the digests left to
    ask ECR about (sha256 only: it holds nothing else)."""
    found: dict[str, _T] = {}
    unknown = []
    for digest in dict.fromkeys(digests):
        answer = known(digest)
        if answer is not None:
            found[digest] = answer
        elif digest.startswith("sha256:"):
            unknown.append(digest)
    return found, unknown


def _size_of(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


class _MountTurn:
    """The mounts of one blob into one repository waiting for their turn to copy it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # mounts holding or waiting for the lock
        self.copied = False  # one of them copied the blob


# PutImage refusing the holder's shape (not a failure of the moment)
_HOLDER_REFUSED = frozenset({"InvalidParameterException", "UnsupportedImageTypeException",
                             "ReferencedImagesNotFoundException", "LimitExceededException"})


def _holder(manifest: Manifest) -> Manifest:
    """The untagged index that keeps ``manifest``'s image while its last tag is removed:
    derived from the image alone, so every attempt (and every replica) makes the same."""
    body = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": manifest.media_type, "digest": manifest.digest,
                       "size": len(manifest.body)}],
        "annotations": {HOLDER_ANNOTATION: manifest.digest}}, separators=(",", ":")).encode()
    return Manifest(body, OCI_INDEX, sha256_digest(body))


def _referenced_by_index(answer: dict[str, Any]) -> bool:
    return any(f.get("failureCode") == "ImageReferencedByManifestList"
               for f in answer.get("failures", []))


def _text_and_digest(body: bytes) -> tuple[str, str]:
    return body.decode(), sha256_digest(body)


def _matches(descriptor: Descriptor, size: int | None, media_type: str | None) -> bool:
    """Whether ``descriptor`` names what is stored (``size``; for a manifest ``media_type``)."""
    return size == descriptor.size and (not media_type or media_type == descriptor.media_type)


def _check_stored(where: str, descriptor: Descriptor, size: int | None,
                  media_type: str | None) -> None:
    """Refuse a descriptor that does not name what is stored: absent, another size, or (for
    a manifest) another media type."""
    detail = {"field": where, "descriptor": descriptor.to_json()}
    if size is None:
        raise OciError(oci.MANIFEST_BLOB_UNKNOWN, detail,
                       message=f"{where} names {descriptor.digest}, which the repository "
                               "does not hold")
    if size != descriptor.size:
        raise OciError(oci.MANIFEST_INVALID, {**detail, "stored_size": size},
                       message=f"{where} gives size {descriptor.size}; the stored content "
                               f"has {size} bytes")
    if media_type and media_type != descriptor.media_type:
        raise OciError(oci.MANIFEST_INVALID, {**detail, "stored_media_type": media_type},
                       message=f"{where} gives media type {descriptor.media_type}; the stored "
                               f"manifest is {media_type}")


def _raise_delete_failures(answer: dict[str, Any], reference: str) -> None:
    """BatchDeleteImage reports refusals in ``failures``. "Not found" on a replayed call is
    the earlier attempt having landed (its answer was lost), so DELETE stays idempotent."""
    replayed = answer.get("ResponseMetadata", {}).get("RetryAttempts", 0) > 0
    for failure in answer.get("failures", []):
        if replayed and failure.get("failureCode") == "ImageNotFound":
            log.info("delete of %s replayed after a lost answer: already gone", reference)
            continue
        raise _delete_failure(failure, reference)


def _delete_failure(failure: dict[str, Any], reference: str) -> OciError:
    code = failure.get("failureCode", "")
    if code in ("ImageNotFound", "ImageTagDoesNotMatchDigest"):
        return OciError(oci.MANIFEST_UNKNOWN, {"reference": reference})
    if code == "ImageReferencedByManifestList":
        return OciError(oci.DENIED, {"reference": reference, "ecr_failure": code},
                        message="an image index still references this manifest", status=409)
    return OciError(oci.UPSTREAM_ERROR, {"reference": reference, "ecr_failure": code},
                    message=failure.get("failureReason") or "upstream delete failed")


async def _file_chunks(handle: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(handle.read, 1 << 20):
            yield chunk
    finally:
        handle.close()


async def _url_chunks(get: Callable[..., Awaitable[aiohttp.ClientResponse]], url: str,
                      headers: dict[str, str]) -> AsyncIterator[bytes]:
    # A replica's read (its proof in the headers) follows no redirect: the proof, and the
    # request, are for that replica alone. A download URL's are followed only where
    # storage's lead (``DownloadTargets.get``).
    try:
        async with await get(url, headers=headers) as response:
            if response.status != 200:
                raise OciError(oci.BLOB_UNKNOWN, {"upstream_status": response.status})
            async for chunk in response.content.iter_chunked(1 << 20):
                yield chunk
    except DownloadRefused as exc:
        raise download_refused(exc) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise storage_unreachable(exc) from exc
