"""Pull-through: a mirror with an ``upstream`` fills ECR from any OCI registry on a miss.

A wrapper around the ECR backend. For requests of a mirror client (``?ns=<host>``) whose
mirror names an upstream registry:

* A manifest ECR does not hold (by tag or by digest) is fetched from the upstream, checked
  against its digest and served at once; its blobs are then copied into the mapped ECR
  repository with the layer actions (each read from the upstream once, hashed on the way,
  CompleteLayerUpload checking it again) and the manifest is put under the same tag or
  digest. The upstream's bytes go to a spool file as fast as it sends them (the tee, see
  tee.py): the ECR upload reads it at its own pace, and a client that asks for the blob
  meanwhile is streamed the same bytes as they arrive, never the last ones before the digest
  matched (a range waits for the copy and is served from ECR or the staged copy). An
  index's children follow ``platforms``: ``all`` copies each of them, the one a client asks
  for first; ``requested`` only those asked for (the index is put once every child is held).
* A tag is trusted for ``tag_ttl_seconds``; then one HEAD (shared by the pulls of the tag
  meanwhile) asks the upstream what it points to, and only a moved tag is fetched again.
  Only the upstream's 404 withdraws a mirror's tag (a route's is then its own); any other
  failure of the check serves ECR's copy, for another ``tag_ttl_seconds`` (the pulls that
  follow do not wait on the upstream again).
* When the upstream is down, slow or rate-limiting, ECR's copy is served (stale-if-error),
  logged and counted; with no copy the client gets a clear OCI error: 404 when the
  upstream does not hold it or will not give it (400, 401/403 after the auth flow), 502
  without Retry-After when it refuses the gateway's own credentials, 503 or 429 with
  Retry-After when it may answer later.
* Identical fills in flight are made once: many nodes pulling one cold image cost one
  upstream read and one ECR upload per blob, per process, and across replicas with the
  Redis state backend (the other replicas wait for the copy, then read ECR's). At most
  ``max_blob_transfers`` blob bodies from one upstream are in flight at once (transfers.py).
* An upstream's fills create at most ``max_new_repositories_per_hour`` repositories
  (creations.py): past it, an image whose repository ECR does not hold is served from the
  upstream on every pull, and nothing of it is written into ECR.

Everything else (and every other name) goes to the wrapped backend unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from cachetools import TTLCache

from gateway.backends.router import Storage
from gateway.blobcache import BlobCache
from gateway.config import MirrorConfig, PullThroughConfig, RouteConfig
from gateway.ecr.singleflight import SingleFlight
from gateway.observability.logs import unsaid
from gateway.observability.metrics import PULLTHROUGH_BYTES, SHARED_CALLS
from gateway.oci import errors as oci
from gateway.oci.backend import (
    BlobLocation,
    Capabilities,
    Manifest,
    ReferrersPage,
    UploadStatus,
)
from gateway.oci.digests import is_digest
from gateway.oci.errors import OciError
from gateway.oci.mediatypes import MANIFEST_TYPES, Descriptor, ParsedManifest, parse_manifest
from gateway.oci.offload import off_loop
from gateway.oci.request import RequestContext
from gateway.pullthrough import bounds, events
from gateway.pullthrough.bounds import Fanout
from gateway.pullthrough.budget import SpoolBudget, SpoolClaim
from gateway.pullthrough.ratelimit import retry_after_seconds
from gateway.pullthrough.sources import Source, Sources
from gateway.pullthrough.tee import Tee
from gateway.pullthrough.upstream import UpstreamError, UpstreamTooSlow
from gateway.state.fills import FillLocks

log = logging.getLogger(__name__)

_MISSES = (oci.MANIFEST_UNKNOWN, oci.NAME_UNKNOWN, oci.BLOB_UNKNOWN)
# Blobs of one image copied at the same time.
_PARALLEL_BLOBS = 4
# How long ECR's upload of a blob may wait for the clients reading it from the tee.
_CLIENTS_FIRST_SECONDS = 30.0
# How long a layer another replica copied into ECR may take to become servable.
_SERVABLE_WITHIN_SECONDS = 5.0
# Bytes of fetched manifests held by their copies into ECR at once. A copy lasts as long as
# its blobs take (an upstream may send one at its minimum rate for hours), and a manifest
# may take 4 MiB (twice that in memory once parsed): past this, a manifest is served but not
# stored (the next pull stores it), so that many tags of large manifests waiting on one slow
# blob cannot fill the gateway's memory. Real manifests take a few KiB.
_STORING_MAX_BYTES = 64 * 1024 * 1024


class PullThrough:
    def __init__(self, inner: Storage, mirrors: dict[str, MirrorConfig],
                 make: Callable[[aiohttp.BaseConnector], aiohttp.ClientSession],
                 password_of: Callable[[PullThroughConfig], str | None],
                 spool_dir: Path | None = None, fills: FillLocks | None = None,
                 routes: list[RouteConfig] | None = None, *, spool_budget: SpoolBudget,
                 blob_cache: BlobCache | None = None,
                 announce_cached: Callable[[str], Awaitable[None]] | None = None,
                 direct_io: bool = False) -> None:
        self._inner = inner
        # Proxy mode's blob cache: a verified spool is linked into it, so the next pulls are
        # served from this gateway's disk without downloading the blob from ECR again; with
        # replicas, announced so that the others stream it from here.
        self._blob_cache = blob_cache
        self._announce_cached = announce_cached
        self._spool_budget = spool_budget
        self._fills = fills  # with replicas: one of them copies a blob, the others wait
        self._sources = Sources(mirrors, routes or [], make, password_of)
        self._manifest_fetches: SingleFlight[Manifest] = SingleFlight("pullthrough_manifest")
        # One HEAD per (source, name, tag) at a time: the pulls that come while it is asked
        # share its answer (a stalling upstream holds them once, not each its own timeout).
        self._tag_checks: SingleFlight[str | None] = SingleFlight("pullthrough_tag_check")
        self._copies: dict[tuple[str, str, str], _BlobCopy] = {}
        self._spool_dir = spool_dir
        self._direct_io = direct_io  # spools written and read past the page cache
        if spool_dir is not None:
            spool_dir.mkdir(parents=True, exist_ok=True)
        self._stores: SingleFlight[None] = SingleFlight("pullthrough_store")
        # Manifests served before ECR holds them: (host, name, digest) → manifest.
        self._pending: dict[tuple[str, str, str], Manifest] = {}
        self._repositories: set[tuple[str, str]] = set()  # created (or found) this process
        self._creations: SingleFlight[bool] = SingleFlight("pullthrough_repository")
        # Manifests an index's copy fetched (host, name, digest) → where that copy stands:
        # the store each fetch starts of its own counts within the same bounds.
        self._fanouts: TTLCache[tuple[str, str, str], Fanout] = TTLCache(
            maxsize=10_000, ttl=3600)
        self._background: set[asyncio.Task[None]] = set()
        self._storing_bytes = 0  # manifest bytes held by copies into ECR (_STORING_MAX_BYTES)

    def _mirror(self, ctx: RequestContext) -> Source | None:
        return self._sources.find(ctx.ns, ctx.name)

    def capabilities(self, ctx: RequestContext) -> Capabilities:
        declared: Capabilities = self._inner.capabilities(ctx)
        return declared

    # -- manifests --------------------------------------------------------------------------

    async def get_manifest(self, ctx: RequestContext, reference: str,
                           accepted: tuple[str, ...] | None = None) -> Manifest:
        mirror = self._mirror(ctx)
        if mirror is None:
            return await self._inner.get_manifest(ctx, reference, accepted)
        if is_digest(reference):
            return await self._by_digest(mirror, ctx, reference, accepted)
        return await self._by_tag(mirror, ctx, reference, accepted)

    async def _by_digest(self, mirror: Source, ctx: RequestContext, digest: str,
                         accepted: tuple[str, ...] | None) -> Manifest:
        pending = self._pending.get((mirror.host, ctx.name, digest))
        if pending is not None and ctx.caller is None:
            return pending
        try:
            return await self._inner.get_manifest(ctx, digest, accepted)
        except OciError as exc:
            if exc.error not in _MISSES:
                raise  # a caller with keys of its own that may not read the repository
        if pending is not None:
            return pending
        return await self._fill(mirror, ctx, digest, accepted)

    async def _by_tag(self, mirror: Source, ctx: RequestContext, tag: str,
                      accepted: tuple[str, ...] | None) -> Manifest:
        """What the tag names, held, revalidated or filled with every manifest type the
        gateway takes, whatever this client takes: a narrow Accept never re-points the tag
        for every other client. A client that does not take that type gets ECR's answer to
        its own Accept, or else the upstream's, stored by digest only."""
        named = await self._tag(mirror, ctx, tag)
        if accepted is None or named.media_type in accepted:
            return named
        try:
            return await self._inner.get_manifest(ctx, tag, accepted)
        except OciError as exc:
            if exc.error not in _MISSES:
                raise
        return await self._fill(mirror, ctx, tag, accepted, store_tag=False)

    async def _tag(self, mirror: Source, ctx: RequestContext, tag: str) -> Manifest:
        held: Manifest | None = None
        try:
            held = await self._inner.get_manifest(ctx, tag, None)
        except OciError as exc:
            if exc.error not in _MISSES:
                raise
        if held is None:
            return await self._fill(mirror, ctx, tag, None)  # nothing to revalidate
        if mirror.checked.get((ctx.name, tag)) == held.digest:
            return held  # checked within the tag TTL
        try:
            current = await self._tag_checks.do(
                (mirror.host, ctx.name, tag),
                partial(mirror.upstream.manifest_digest, mirror.upstream_name(ctx.name), tag,
                        MANIFEST_TYPES))
        except UpstreamError as exc:
            if (exc.missing or exc.refused) and mirror.own_tags:
                # A name or tag the upstream does not hold (Docker Hub: a 401) is the
                # route's own, pushed by its clients.
                mirror.checked[(ctx.name, tag)] = held.digest
                return held
            if exc.missing:  # deleted upstream: a mirror follows it
                events.record(ctx, mirror.registry, _outcome(exc))
                raise _client_error(mirror, ctx.name, tag, exc) from None
            # Only a 404 says the tag is gone: a refusal (an auth hiccup, credentials being
            # rotated) or an outage must not make a held image unpullable.
            return self._stale(mirror, ctx, tag, held, exc)
        if current == held.digest:
            mirror.checked[(ctx.name, tag)] = held.digest
            events.record(ctx, mirror.registry, "revalidated")
            return held
        try:
            return await self._fill(mirror, ctx, tag, None)
        except _UpstreamFailure as exc:  # the tag moved, the new image cannot be read now
            if not exc.cause.missing:  # (Docker Hub: HEAD is free, a GET is rate-limited)
                return self._stale(mirror, ctx, tag, held, exc.cause)
            raise

    def _stale(self, mirror: Source, ctx: RequestContext, tag: str, held: Manifest,
               exc: UpstreamError) -> Manifest:
        # Trusted for another tag TTL: an upstream that is down, or holds the check until
        # its timeout, would otherwise hold every pull of the tag as long.
        mirror.checked[(ctx.name, tag)] = held.digest
        events.record(ctx, mirror.registry, "stale")
        if (left_out := mirror.warnings.due("stale")) is not None:
            log.warning("pull-through %s/%s:%s: serving ECR's copy %s, the upstream did not "
                        "confirm the tag (%s)%s", mirror.registry, ctx.name, tag, held.digest,
                        exc, unsaid(left_out))
        if exc.credentials_refused:
            _credentials_warning(mirror)
        return held

    async def _fill(self, mirror: Source, ctx: RequestContext, reference: str,
                    accepted: tuple[str, ...] | None, *, store_tag: bool = True) -> Manifest:
        """Fetch from the upstream and serve; the copy into ECR goes on in the background,
        under the tag too (a tag ``reference``) unless ``store_tag`` is False."""
        tag = reference if store_tag and not is_digest(reference) else None
        return await self._manifest_fetches.do(
            (mirror.host, ctx.name, reference, accepted),
            lambda: self._fetch(mirror, ctx, reference, accepted, tag))

    async def _fetch(self, mirror: Source, ctx: RequestContext, reference: str,
                     accepted: tuple[str, ...] | None, tag: str | None) -> Manifest:
        try:
            fetched = await mirror.upstream.manifest(
                mirror.upstream_name(ctx.name), reference, accepted or MANIFEST_TYPES)
        except UpstreamError as exc:
            events.record(ctx, mirror.registry, _outcome(exc))
            raise _client_error(mirror, ctx.name, reference, exc) from None
        try:
            parsed = await off_loop(parse_manifest, fetched.body, fetched.media_type or None)
            bounds.check(parsed)
        except OciError as exc:  # the upstream's fault, not the client's
            events.record(ctx, mirror.registry, "upstream_error")
            log.warning("pull-through %s/%s:%s: the upstream sent an invalid manifest (%s)",
                        mirror.registry, ctx.name, reference, exc.message)
            reason = exc.detail.get("reason") if isinstance(exc.detail, dict) else None
            raise OciError(oci.MANIFEST_INVALID, {
                "upstream": mirror.registry, "name": ctx.name, "reference": reference,
                "reason": reason or exc.message}, status=502,
                message=f"{mirror.registry} sent a manifest that is not valid") from None
        manifest = Manifest(fetched.body, parsed.media_type, fetched.digest)
        events.record(ctx, mirror.registry, "fetched")
        held = len(manifest.body)
        if self._storing_bytes + held > _STORING_MAX_BYTES:
            events.record(ctx, mirror.registry, "store_deferred")
            if (left_out := mirror.warnings.due("store_deferred")) is not None:
                log.warning("pull-through %s/%s:%s: served but not stored in ECR: %d bytes of "
                            "manifests are being stored already (the next pull stores it)%s",
                            mirror.registry, ctx.name, reference, self._storing_bytes,
                            unsaid(left_out))
            return manifest
        self._storing_bytes += held
        self._pending[(mirror.host, ctx.name, manifest.digest)] = manifest
        task = asyncio.create_task(self._store_logged(mirror, ctx, manifest, parsed, tag))
        self._background.add(task)
        task.add_done_callback(partial(self._stored, held))
        return manifest

    def _stored(self, held: int, task: asyncio.Task[None]) -> None:
        """A manifest's copy into ECR is over: its bytes are no longer held."""
        self._background.discard(task)
        self._storing_bytes -= held

    async def _store_logged(self, mirror: Source, ctx: RequestContext, manifest: Manifest,
                            parsed: ParsedManifest, tag: str | None) -> None:
        ctx = ctx.detached()
        try:
            await self._store(mirror, ctx, manifest, parsed, tag)
        except _NotYet as exc:
            log.info("pull-through %s/%s@%s: index kept out of ECR until every platform is "
                     "pulled (%s is not yet)", mirror.registry, ctx.name, manifest.digest, exc)
        except _NotKept:  # served from the upstream only (warned of, counted)
            pass
        except Exception as exc:  # the next pull tries again
            events.record(ctx, mirror.registry, "fill_failed")
            log.warning("pull-through %s/%s@%s: not stored in ECR: %s", mirror.registry, ctx.name,
                        manifest.digest, exc)

    async def _store(self, mirror: Source, ctx: RequestContext, manifest: Manifest,
                     parsed: ParsedManifest, tag: str | None) -> None:
        """Copy what ``manifest`` references into ECR, then put it (once per digest)."""
        await self._stores.do((mirror.host, ctx.name, manifest.digest),
                              partial(self._copy_and_put, mirror, ctx, manifest, parsed))
        if tag is not None:
            await self._inner.put_manifest(ctx, tag, manifest.body, parsed)
            mirror.checked[(ctx.name, tag)] = manifest.digest
        await self._prime(ctx, parsed.blobs)
        events.record(ctx, mirror.registry, "filled")
        log.info("pull-through %s/%s%s: stored in ECR as %s", mirror.registry, ctx.name,
                 f":{tag}" if tag else "", manifest.digest)

    async def _prime(self, ctx: RequestContext, blobs: list[Descriptor]) -> None:
        """Locate each blob of the image just filled, once: the pulls that follow a first
        one (the other nodes) are then answered without an ECR call per blob. An index's
        other platforms are not primed: nobody has asked for them yet."""
        limit = asyncio.Semaphore(_PARALLEL_BLOBS)  # no burst of ECR calls for a large image

        async def one(blob: Descriptor) -> None:
            try:
                async with limit:
                    await self._inner.locate_blob(ctx, blob.digest)
            except Exception as exc:  # only a head start: the next pull asks on its own
                log.debug("pull-through: %s not located ahead of its pulls: %s", blob.digest, exc)

        await asyncio.gather(*(one(blob) for blob in blobs))

    async def _copy_and_put(self, mirror: Source, ctx: RequestContext, manifest: Manifest,
                            parsed: ParsedManifest, fanout: Fanout | None = None) -> None:
        """``fanout``: where the copy of the index this manifest is an entry of stands."""
        try:
            # Past the bound of new repositories, an image ECR has no repository for is not
            # read from the upstream for nothing: its clients' reads are streamed on their own.
            if (mirror.host, ctx.name) not in self._repositories and \
                    not mirror.creations.has_room() and not await self._held(mirror, ctx):
                raise _NotKept(mirror, ctx.name, manifest.digest)
            # The blobs' upstream reads start at once (the repository is created, once, as
            # the first copy into ECR begins): a client asking for them next finds them on
            # their way.
            fanout = fanout or self._fanouts.get((mirror.host, ctx.name, manifest.digest))
            if parsed.children:
                await self._copy_children(mirror, ctx, parsed.children, fanout or Fanout())
            else:
                if fanout is not None:  # an entry of an index being copied
                    fanout.take_blobs(len(parsed.blobs))
                await self._copy_blobs(mirror, ctx, parsed.blobs)
            if not await self._ensure_repository(mirror, ctx):
                raise _NotKept(mirror, ctx.name, manifest.digest)
            await self._inner.put_manifest(ctx, manifest.digest, manifest.body, parsed)
        finally:
            self._pending.pop((mirror.host, ctx.name, manifest.digest), None)

    async def _copy_children(self, mirror: Source, ctx: RequestContext,
                             children: list[Descriptor], fanout: Fanout) -> None:
        """Every child of an index into ECR first (ECR refuses an index whose children it
        does not hold). With ``platforms: requested`` only those clients asked for are
        copied (each by its own fill): the index waits until all of them are held. With
        ``all``, within the bounds of one index's copy (bounds.py)."""
        for digest in dict.fromkeys(child.digest for child in children):
            with contextlib.suppress(OciError):
                await self._inner.get_manifest(ctx, digest)
                continue
            if mirror.settings.platforms != "all":
                raise _NotYet(digest)
            level = self._fanouts[(mirror.host, ctx.name, digest)] = fanout.child()
            manifest = await self._fill(mirror, ctx, digest, None)
            parsed = await off_loop(parse_manifest, manifest.body, manifest.media_type)
            await self._stores.do((mirror.host, ctx.name, digest),
                                  partial(self._copy_and_put, mirror, ctx, manifest, parsed,
                                          level))

    async def _copy_blobs(self, mirror: Source, ctx: RequestContext,
                          blobs: list[Descriptor]) -> None:
        limit = asyncio.Semaphore(_PARALLEL_BLOBS)

        async def one(blob: Descriptor) -> None:
            async with limit:
                await self._copy_blob(mirror, ctx, blob.digest, blob.size)

        await asyncio.gather(*(one(blob) for blob in blobs if blob.digest.startswith("sha256:")))

    async def _ensure_repository(self, mirror: Source, ctx: RequestContext) -> bool:
        """Whether ECR holds the repository: created (once) if the upstream's
        ``max_new_repositories_per_hour`` has room, else only found."""
        key = (mirror.host, ctx.name)
        if key in self._repositories:
            return True
        held = await self._creations.do(key, partial(self._create_repository, mirror, ctx))
        if held:
            self._repositories.add(key)
        return held

    async def _create_repository(self, mirror: Source, ctx: RequestContext) -> bool:
        unit = mirror.creations.take()
        if unit is None:
            return await self._held(mirror, ctx)
        try:
            created = await self._inner.create_repository_for(ctx)
        except BaseException:
            mirror.creations.give_back(unit)
            raise
        if not created:  # a repository ECR held already is no new one
            mirror.creations.give_back(unit)
        return True

    async def _held(self, mirror: Source, ctx: RequestContext) -> bool:
        """Past the bound of new repositories: whether ECR holds this one already (it is
        filled as any other), else the warning and the event."""
        if await self._inner.repository_exists(ctx):
            self._repositories.add((mirror.host, ctx.name))
            return True
        events.record(ctx, mirror.registry, "repositories_full")
        if (left_out := mirror.warnings.due("repositories_full")) is not None:
            log.warning("pull-through %s/%s: served from the upstream, not stored in ECR: the "
                        "fills from this upstream created max_new_repositories_per_hour (%d) "
                        "new repositories within the hour%s", mirror.registry, ctx.name,
                        mirror.creations.per_hour, unsaid(left_out))
        return False

    # -- blobs ------------------------------------------------------------------------------

    def _start_copy(self, mirror: Source, ctx: RequestContext, digest: str,
                    size: int | None = None) -> _BlobCopy:
        """The blob's copy into ECR in flight, started if there is none (once per process);
        ``size``: what the manifest naming the blob says it is."""
        key = (mirror.host, ctx.name, digest)
        copy = self._copies.get(key)
        if copy is not None:
            SHARED_CALLS.labels("pullthrough_blob").inc()
            return copy
        copy = _BlobCopy(asyncio.get_running_loop().create_future())
        copy.task = asyncio.create_task(self._upload_blob(mirror, ctx, digest, copy.source,
                                                          size))
        self._copies[key] = copy
        self._background.add(copy.task)

        def finished(task: asyncio.Task[None]) -> None:
            self._background.discard(task)
            if self._copies.get(key) is copy:
                del self._copies[key]
            if not task.cancelled():
                task.exception()  # retrieved: no warning when nobody waited

        copy.task.add_done_callback(finished)
        return copy

    async def _copy_blob(self, mirror: Source, ctx: RequestContext, digest: str,
                         size: int | None = None) -> None:
        await asyncio.shield(self._start_copy(mirror, ctx, digest, size).task)

    async def _upload_blob(self, mirror: Source, ctx: RequestContext, digest: str,
                           source: asyncio.Future[Tee | None], size: int | None) -> None:
        """The blob's copy, made by one replica at a time (gateway/state/fills.py): the
        others wait for it, then find the layer in ECR."""
        ctx = ctx.detached()
        if self._fills is None:
            return await self._copy_once(mirror, ctx, digest, source, size)

        async def in_ecr() -> bool:
            with contextlib.suppress(OciError):
                return await self._inner.stat_blob(ctx, digest) is not None
            return False

        try:
            async with self._fills.first(f"{mirror.host}/{ctx.name}@{digest}", in_ecr) as mine:
                if mine:
                    return await self._copy_once(mirror, ctx, digest, source, size)
        except BaseException as exc:
            if not source.done():
                source.set_exception(exc)
                source.exception()  # retrieved: the task raises it too
            raise
        source.set_result(None)  # another replica copied it

    async def _copy_once(self, mirror: Source, ctx: RequestContext, digest: str,
                         source: asyncio.Future[Tee | None], expected: int | None) -> None:
        """Read the upstream once into a tee (never more than the ``expected`` size a
        manifest gave, and only while the spool budget has room); ECR's upload and the
        waiting clients read it."""
        claim = self._spool_budget.claim()
        turn = False  # one of the upstream's blob transfers, held until the tee is filled
        try:
            with contextlib.suppress(OciError):
                if await self._inner.stat_blob(ctx, digest) is not None:
                    source.set_result(None)
                    return
            if expected is not None:  # all of it before the first byte: refused cleanly
                self._take(mirror, ctx, claim, expected, digest)
            turn = await mirror.transfers.take()
            if not turn:
                raise _no_turn(mirror, ctx, digest)
            try:
                size, chunks = await mirror.upstream.blob(mirror.upstream_name(ctx.name),
                                                          digest, expected)
            except UpstreamError as exc:
                events.record(ctx, mirror.registry, _outcome(exc))
                raise _client_error(mirror, ctx.name, digest, exc, blob=True) from None
            if expected is None:  # as the bytes arrive
                chunks = self._metered(mirror, ctx, claim, chunks, digest)
            tee = Tee(self._spool_dir, digest, size, direct=self._direct_io)
        except BaseException as exc:
            if turn:
                mirror.transfers.give_back()
            claim.release()
            source.set_exception(exc)
            source.exception()  # retrieved: the task raises it too
            raise
        source.set_result(tee)
        fill = asyncio.create_task(tee.fill(chunks, PULLTHROUGH_BYTES.labels(mirror.registry).inc))
        fill.add_done_callback(lambda _: mirror.transfers.give_back())
        try:
            # ECR's upload (signing, encoding, part uploads) would compete with the clients
            # following the tee for this process's CPU: it starts once the upstream's bytes
            # are in and those clients are served (or have been given a fair while).
            await tee.quiet(_CLIENTS_FIRST_SECONDS)
            if not tee.verified:  # the upstream's failure, raised below: nothing is created
                await fill
            if self._blob_cache is not None and tee.verified and tee.size is not None and \
                    await self._blob_cache.adopt(digest, tee.size, tee.keep_as,
                                                 on_disk=self._direct_io) and \
                    self._announce_cached is not None:
                await self._announce_cached(digest)
            # Only now that the upstream has sent the blob: a caller asking for names the
            # upstream does not hold must not fill ECR's repository quota with empty ones.
            if not await self._ensure_repository(mirror, ctx):
                raise _NotKept(mirror, ctx.name, digest, tee.received)
            await self._store_blob(ctx, digest, tee)
        except asyncio.CancelledError:
            fill.cancel()
            raise
        except Exception:
            await asyncio.wait([fill])
            failure = None if fill.cancelled() else fill.exception()
            if failure is not None:
                if isinstance(failure.__cause__, UpstreamError):  # the tee's reason for it
                    events.record(ctx, mirror.registry, _outcome(failure.__cause__))
                raise failure from None  # the upstream's failure, not its echo
            raise
        finally:
            await asyncio.wait([fill])  # readers still following get every byte
            # Freeing a large spool's pages takes a while: not on the event loop.
            tee.retire()  # on the event loop: no reader starts from here on
            await asyncio.shield(asyncio.to_thread(tee.close))
            claim.release()

    def _take(self, mirror: Source, ctx: RequestContext, claim: SpoolClaim, size: int,
              digest: str) -> None:
        try:
            claim.take(size, digest)
        except OciError:
            events.record(ctx, mirror.registry, "spool_full")
            log.warning("pull-through of %s@%s refused: the spool budget of %d bytes is "
                        "taken (%d in use)", ctx.name, digest, self._spool_budget.max_bytes,
                        self._spool_budget.in_use)
            raise

    async def _metered(self, mirror: Source, ctx: RequestContext, claim: SpoolClaim,
                       pieces: AsyncGenerator[bytes, None],
                       digest: str) -> AsyncGenerator[bytes, None]:
        """A blob of unknown size takes its share of the budget piece by piece."""
        async with contextlib.aclosing(pieces) as upstream:
            async for piece in upstream:
                self._take(mirror, ctx, claim, len(piece), digest)
                yield piece

    async def _store_blob(self, ctx: RequestContext, digest: str, tee: Tee) -> None:
        """The tee's bytes into ECR at the upload path's own pace (never completed before
        they matched the digest)."""
        status = await self._inner.start_upload(ctx)
        try:
            async with contextlib.aclosing(tee.reader()) as chunks:
                # The verified spool is the upload's staged copy: its bytes are not written
                # again (they are hashed again, as every upload is).
                await self._inner.write_upload(ctx, status.upload_id, chunks, 0,
                                               kept=tee.keep_as if tee.verified else None)
            await self._inner.finish_upload(ctx, status.upload_id, digest)
        except BaseException:
            with contextlib.suppress(OciError):
                await self._inner.cancel_upload(ctx, status.upload_id)
            raise

    async def _arriving(self, mirror: Source, ctx: RequestContext,
                        digest: str) -> tuple[_Growing | None, _BlobCopy]:
        """The blob's bytes while its copy is in flight, starting the copy if ECR does not
        hold the blob (None once the copy is over, or was not needed); and the copy. A copy
        ECR did not keep (past ``max_new_repositories_per_hour``) is made again: its blob
        is read from the upstream again."""
        for _ in range(3):
            copy = self._start_copy(mirror, ctx, digest)
            waits: list[asyncio.Future[Any]] = [copy.source, copy.task]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if not copy.task.done() and copy.source.done() and \
                    copy.source.exception() is None:
                tee = copy.source.result()
                # Not once the copy is over (its spool closing): then from storage.
                if tee is not None and not tee.retired:
                    return _Growing(tee, copy.task), copy
            await asyncio.wait([copy.task])  # over, or about to be (out of _copies then)
            if copy.task.cancelled() or not isinstance(copy.task.exception(), _NotKept):
                break
        return None, copy

    async def _check_caller(self, ctx: RequestContext, digest: str, *,
                            read: bool = False) -> None:
        """A caller signing with its own keys (auth.mode aws) gets what the upstream sends
        only where it may read the repository: its refusal stands (a miss is no refusal).
        ``read``: the blob's bytes, which need ECR's download right (GetDownloadUrlForLayer)
        where its size needs only the layer check's. Other callers were checked by the
        gateway's rules already."""
        if ctx.caller is None:
            return
        try:
            if read:
                await self._inner.serves_kept_copy(ctx, digest)
            else:
                await self._inner.stat_blob(ctx, digest)
        except OciError as exc:
            if exc.error not in _MISSES:
                raise

    def pulls_through(self, ctx: RequestContext, digest: str) -> bool:
        """Whether a miss of this blob is read from an upstream registry (which then says
        whether the repository holds it), rather than being one storage knows of or not."""
        return self._blob_source(ctx, digest) is not None

    def _blob_source(self, ctx: RequestContext, digest: str) -> Source | None:
        """The upstream a blob is read from on a miss: only sha256 blobs, the one digest the
        tee verifies (any other would reach clients unchecked)."""
        return self._mirror(ctx) if digest.startswith("sha256:") else None

    async def serves_kept_copy(self, ctx: RequestContext, digest: str) -> bool:
        """A mirrored blob the repository holds is the upstream's to serve."""
        if self._blob_source(ctx, digest) is None:
            return await self._inner.serves_kept_copy(ctx, digest)
        await self._check_caller(ctx, digest, read=True)
        return await self.stat_blob(ctx, digest) is not None

    async def stat_blob(self, ctx: RequestContext, digest: str) -> int | None:
        mirror = self._blob_source(ctx, digest)
        if mirror is None:
            return await self._inner.stat_blob(ctx, digest)
        await self._check_caller(ctx, digest)
        arriving, copy = await self._arriving(mirror, ctx, digest)
        if arriving is not None and arriving.tee.size is not None:
            return arriving.tee.size
        try:
            return await self._held_blob_size(ctx, digest, copy)
        except _NotKept as exc:  # served from the upstream only
            return exc.size

    async def _held_blob_size(self, ctx: RequestContext, digest: str, copy: _BlobCopy, *,
                              explained: bool = False) -> int | None:
        """The blob's size once ECR holds it: its copy is joined (ECR may already list a
        layer whose copy has not finished). ``explained``: a miss the upstream answered is
        raised as the upstream's answer (its status in the detail), not as None."""
        try:
            await asyncio.shield(copy.task)
        except OciError as exc:
            if exc.error in _MISSES and not (explained and isinstance(exc, _UpstreamFailure)):
                return None
            raise
        return await self._inner.stat_blob(ctx, digest)

    async def locate_blob(self, ctx: RequestContext, digest: str, *,
                          fresh: bool = False) -> BlobLocation:
        mirror = self._blob_source(ctx, digest)
        if mirror is not None:
            await self._check_caller(ctx, digest, read=True)
            # A copy in flight is streamed from its tee as the upstream sends it.
            arriving, copy = await self._arriving(mirror, ctx, digest)
            if arriving is not None:
                events.record(ctx, mirror.registry, "streamed")
                size = arriving.tee.size
                return BlobLocation(size if size is not None else -1, growing=arriving)
            if await self._held_blob_size(ctx, digest, copy, explained=True) is None:
                raise OciError(oci.BLOB_UNKNOWN, {"digest": digest})
            return await self._settled_location(ctx, digest, fresh)
        return await self._inner.locate_blob(ctx, digest, fresh=fresh)

    async def _settled_location(self, ctx: RequestContext, digest: str,
                                fresh: bool) -> BlobLocation:
        """Where storage serves a blob it holds. Copied by another replica, a layer is held
        a moment before it is servable (ECR serves only layers an image references; until
        then the copying replica's staged copy is, once announced): asked again briefly."""
        delay, deadline = 0.05, time.monotonic() + _SERVABLE_WITHIN_SECONDS
        while True:
            try:
                location: BlobLocation = await self._inner.locate_blob(ctx, digest,
                                                                       fresh=fresh)
                return location
            except OciError as exc:
                if exc.error is not oci.BLOB_UNKNOWN or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay, fresh = min(delay * 2, 0.5), True

    # -- everything else is the inner backend's ---------------------------------------------

    async def start_upload(self, ctx: RequestContext) -> UploadStatus:
        return await self._inner.start_upload(ctx)

    async def mount_blob(self, ctx: RequestContext, digest: str, source: str) -> bool:
        return await self._inner.mount_blob(ctx, digest, source)

    async def upload_status(self, ctx: RequestContext, upload_id: str) -> UploadStatus:
        return await self._inner.upload_status(ctx, upload_id)

    async def write_upload(self, ctx: RequestContext, upload_id: str, chunks: AsyncIterator[bytes],
                           start: int | None, *, length: int | None = None) -> UploadStatus:
        return await self._inner.write_upload(ctx, upload_id, chunks, start, length=length)

    async def finish_upload(self, ctx: RequestContext, upload_id: str, digest: str) -> None:
        await self._inner.finish_upload(ctx, upload_id, digest)

    async def cancel_upload(self, ctx: RequestContext, upload_id: str) -> None:
        await self._inner.cancel_upload(ctx, upload_id)

    async def put_manifest(self, ctx: RequestContext, reference: str, body: bytes,
                           parsed: ParsedManifest) -> str:
        return await self._inner.put_manifest(ctx, reference, body, parsed)

    async def delete_manifest(self, ctx: RequestContext, reference: str) -> None:
        await self._inner.delete_manifest(ctx, reference)

    async def list_tags(self, ctx: RequestContext) -> list[str]:
        return await self._inner.list_tags(ctx)

    async def list_repositories(self, ctx: RequestContext) -> list[str]:
        return await self._inner.list_repositories(ctx)

    async def referrers(self, ctx: RequestContext, digest: str, artifact_type: str | None,
                        cursor: str | None = None) -> ReferrersPage:
        return await self._inner.referrers(ctx, digest, artifact_type, cursor)

    async def close(self) -> None:
        """Let background copies finish their current call, then stop them."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._sources.close()


@dataclass
class _BlobCopy:
    """One blob's copy into ECR: its tee once the upstream answered (None when ECR held the
    blob already), and the copy itself."""

    source: asyncio.Future[Tee | None]
    task: asyncio.Task[None] = field(init=False)


class _Growing:
    """A blob in flight as the OCI handlers see it: the tee's bytes, settled with its copy."""

    def __init__(self, tee: Tee, copy: asyncio.Task[None]) -> None:
        self.tee = tee
        self._copy = copy

    def open(self) -> AsyncGenerator[bytes, None]:
        return self.tee.reader(client=True)

    async def settled(self) -> None:
        await asyncio.shield(self._copy)


class _NotYet(Exception):
    """An index child that no client has asked for yet (``platforms: requested``)."""


class _NotKept(OciError):
    """A fill past the upstream's ``max_new_repositories_per_hour`` into a repository ECR
    does not hold: its clients are served from the upstream, nothing is stored. A client
    hears it only for a range of such a blob (ranges are served from storage)."""

    def __init__(self, mirror: Source, name: str, reference: str, size: int | None = None):
        super().__init__(oci.UNAVAILABLE, {"upstream": mirror.registry, "name": name,
                                           "reference": reference},
                         message=f"not in ECR, and not stored there: the gateway's bound of "
                                 f"new repositories filled from {mirror.registry} is reached "
                                 "(the whole blob is served from the upstream, not a range)",
                         headers={"Retry-After": "5"})
        self.size = size  # a blob's, verified


def _outcome(exc: UpstreamError) -> str:
    """The event (a metric label: one of a few words) for an upstream's failure."""
    if isinstance(exc, UpstreamTooSlow):
        return "too_slow"
    if exc.status == 0:
        return "unreachable"
    if exc.status == 429:
        return "rate_limited"
    if exc.missing:
        return "missing"
    if exc.credentials_refused:
        return "credentials_refused"
    return "refused" if exc.refused else "upstream_error"


class _UpstreamFailure(OciError):
    """What the client hears when the upstream could not give what ECR does not hold; the
    upstream's failure itself in ``cause``."""

    def __init__(self, error: oci.ErrorCode, detail: dict[str, Any], message: str,
                 cause: UpstreamError, headers: dict[str, str] | None = None,
                 status: int | None = None) -> None:
        super().__init__(error, detail, message=message, headers=headers, status=status)
        self.cause = cause


def _client_error(mirror: Source, name: str, reference: str, exc: UpstreamError, *,
                  blob: bool = False) -> _UpstreamFailure:
    """What the client hears when the upstream could not give what ECR does not hold: a
    404 when the upstream does not hold it or will not give it (no Retry-After: asking
    again changes nothing), a 502 when it refuses the gateway's own credentials, a 429 or
    503 with Retry-After when it may answer later."""
    detail = {"upstream": mirror.registry, "name": name, "reference": reference,
              "upstream_status": exc.status}
    if exc.missing:
        error = oci.BLOB_UNKNOWN if blob else oci.MANIFEST_UNKNOWN
        return _UpstreamFailure(error, detail, f"not in ECR, and {mirror.registry} has no "
                                f"{exc.what}", exc)
    if exc.refused:
        # Docker Hub answers a repository it does not have with 401: the token it gave
        # lacks the scope. The client named something that is not there for it.
        error = oci.BLOB_UNKNOWN if blob else oci.NAME_UNKNOWN
        asked = mirror.upstream_name(name)
        needs = "the gateway's credentials may not read it" \
            if mirror.upstream.has_credentials else "it needs credentials"
        return _UpstreamFailure(error, detail, f"not in ECR, and {mirror.registry} does not "
                                f"hold {asked}, or {needs}", exc)
    if exc.credentials_refused:
        _credentials_warning(mirror)
        return _UpstreamFailure(oci.UNAVAILABLE, detail, f"not in ECR, and {mirror.registry} "
                                "refuses the gateway's credentials for it (the gateway's "
                                "configuration must be corrected)", exc, status=502)
    if exc.status == 429:
        return _UpstreamFailure(oci.TOOMANYREQUESTS, detail,
                                f"not in ECR, and {mirror.registry} is rate-limiting", exc,
                                headers=_retry_after(exc.retry_after))
    return _UpstreamFailure(oci.UNAVAILABLE, detail, f"not in ECR, and {mirror.registry} "
                            f"cannot be read now ({exc.what})", exc, headers={"Retry-After": "5"})


def _no_turn(mirror: Source, ctx: RequestContext, digest: str) -> OciError:
    """A blob transfer refused: the upstream has ``max_blob_transfers`` in flight already."""
    events.record(ctx, mirror.registry, "transfers_full")
    if (left_out := mirror.warnings.due("transfers_full")) is not None:
        log.warning("pull-through %s: %d blob transfers in flight already, %s/%s@%s refused "
                    "(max_blob_transfers)%s", mirror.registry, mirror.transfers.limit,
                    mirror.registry, ctx.name, digest, unsaid(left_out))
    return OciError(oci.UNAVAILABLE, {"upstream": mirror.registry, "name": ctx.name,
                                      "reference": digest},
                    message=f"not in ECR, and {mirror.transfers.limit} blob transfers from "
                            f"{mirror.registry} are in flight already: try again shortly",
                    headers={"Retry-After": "5"})


def _credentials_warning(mirror: Source) -> None:
    """The operator's part: the upstream refuses the configured credentials (named by the
    registry and the setting, never their value)."""
    if (left_out := mirror.warnings.due("credentials")) is not None:
        log.warning("pull-through %s: the upstream refuses the configured username and "
                    "password_file: correct them (pulls of images ECR does not hold fail "
                    "meanwhile)%s", mirror.registry, unsaid(left_out))


# The longest wait passed on to clients from an upstream's Retry-After.
_MAX_RETRY_AFTER_SECONDS = 3600


def _retry_after(value: str | None) -> dict[str, str]:
    """The upstream's Retry-After (seconds or an HTTP date) as whole seconds between 1 and
    an hour; nothing when it sent none that reads as a time (never its text itself)."""
    seconds = retry_after_seconds(value)
    if seconds is None or not math.isfinite(seconds):
        return {}
    return {"Retry-After": str(min(max(math.ceil(seconds), 1), _MAX_RETRY_AFTER_SECONDS))}
