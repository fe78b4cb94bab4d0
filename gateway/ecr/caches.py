"""The pull path's in-memory caches, one per kind of answer ECR gives.

* manifests by digest: a digest's content never changes, but the image can be deleted (by
  another replica, another ECR client, a lifecycle rule). A hit is served without an
  upstream call for ``cache.manifest_revalidate_seconds`` after ECR last returned it; an
  older entry is a miss, so ECR is asked again and a deleted image is not served beyond
  that bound. Least recently used entries are dropped beyond ``cache.manifest_max_bytes``.
* tag → digest: a tag can move, so answers are reused for ``cache.tag_ttl_seconds`` only
  (0 disables); a push or delete through this gateway updates it at once, other writers are
  seen when the entry expires.

With the Redis state backend, replicas tell each other about tag moves and deletes
(gateway/state/events.py), so those are seen by every replica at once. A read that ECR
answered before such a change may reach the cache after it (the answer was on its way when
the change's notice was applied): every change to a repository counts in its
:meth:`PullCaches.version`, and an answer is kept only if the version is still the one its
read started from (it is still returned to the request that asked).
* download URLs (GetDownloadUrlForLayer) per repository and digest, for
  ``cache.download_url_ttl_seconds`` but never beyond half of the lifetime the presigned URL
  states (``X-Amz-Date`` + ``X-Amz-Expires``), so a redirected client never gets a URL about
  to expire; in proxy mode a 403 from the URL's host asks for a new one.
* membership: which blobs a repository holds, learned from the manifests it served (ECR
  accepts an image only when its repository holds every layer) and from layer checks. It
  lets a blob served from the local blob cache skip the upstream check, if it was learned
  from a manifest: ECR serves a layer only while an image references it, though a layer
  check goes on finding one whose images were deleted.

Download URLs and membership outlive no image deletion told to this process (through it, by
any identity, or by another replica's notice): a deletion in a repository counts in
:meth:`PullCaches.blob_epoch`, and such an answer is served only if it was read from ECR
after the last deletion in its repository (a layer deleted with its image, one that held a
leaked secret say, is asked ECR about again, which refuses it once no image references it).

A manifest read that ECR answers "no such image" or "no such repository" (deleted behind the
gateway: in ECR itself, a lifecycle rule) ends the same answers, as a deletion, if this
process still holds an answer of that image or repository (:meth:`PullCaches.found_gone`,
:meth:`PullCaches.found_repository_gone`): once only, so that asking for what does not exist
costs no other reader its cached answers.

Keys name the ECR repository (``Target.key``: registry id, region, repository), so one
repository's answers are never served for another. Every lookup counts a hit or a miss in
``ecr_gateway_cache_events_total``.

Answers read with a caller's own keys (auth.mode aws: ``Target.key`` names the access key)
are that identity's alone, and IAM may stop taking them at any moment (a session token that
expires, a deleted key, a policy that no longer allows the repository). So that no cached
answer outlives that by more than the manifests' bound, download URLs and membership are
kept for such a view no longer than ``cache.manifest_revalidate_seconds`` either (as is an
identity's right to push to uploads others opened, gateway/ecr/uploads.py): the next read
asks ECR with the caller's keys, which ends the identity if they are refused.
A change, though, is one to the repository: a tag moved or an image deleted through one
identity (or told by another replica) drops every identity's view of it
(:meth:`PullCaches.views`).
"""

from __future__ import annotations

import calendar
import itertools
import time
from collections.abc import Collection
from typing import Generic, TypeVar
from urllib.parse import parse_qs, urlsplit

from cachetools import LRUCache, TTLCache

from gateway.config import CacheConfig
from gateway.observability.metrics import cache_event
from gateway.oci.backend import Manifest

RepoKey = tuple[str | None, str, str]  # registry id, region, repository
Accepted = tuple[str, ...] | None  # the manifest media types a client accepts; None: all
K = TypeVar("K")
V = TypeVar("V")

# Repositories whose last change is counted (the least recently changed are forgotten: a
# read that started before that then keeps nothing, see PullCaches.version).
CHANGES_KEPT = 100_000

# How long what a repository holds is remembered. Images can be deleted behind the gateway
# (in ECR itself, a lifecycle rule); a blob of such an image may then still be served for this
# long (as from a CDN), never bytes of another digest. A deletion the gateway is told of
# ends it at once (PullCaches.blob_epoch).
MEMBERSHIP_SECONDS = 300.0


class ByteLRU(Generic[K, V]):
    """A dict bounded by the total size of its values (sizes given on insert): a cachetools
    LRUCache whose items carry their size."""

    def __init__(self, max_bytes: int) -> None:
        self._items: LRUCache[K, tuple[V, int]] = LRUCache(max_bytes, getsizeof=_item_size)

    @property
    def max_bytes(self) -> int:
        return int(self._items.maxsize)

    @property
    def bytes(self) -> int:
        return int(self._items.currsize)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        item = self._items.get(key)  # a hit becomes the most recently used
        return None if item is None else item[0]

    def put(self, key: K, value: V, size: int) -> None:
        self.pop(key)
        if size <= self.max_bytes:  # LRUCache refuses a larger one (ValueError)
            self._items[key] = (value, size)

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def keys(self) -> list[K]:
        return list(self._items)

    def __contains__(self, key: object) -> bool:  # leaves the order as it is
        return key in self._items


def _item_size(item: tuple[object, int]) -> int:
    return item[1]


class _Deletions(LRUCache[RepoKey, int]):
    """Repository -> the number of its last image deletion. One forgotten (the least
    recently changed, beyond CHANGES_KEPT) raises ``floor``: a repository not found counts
    as deleted from at ``floor``, so no answer it stood against is served again."""

    floor = 0

    def popitem(self) -> tuple[RepoKey, int]:
        key, number = super().popitem()
        self.floor = max(self.floor, number)
        return key, number

    def last(self, repo: RepoKey) -> int:
        return max(self.get(repo, 0), self.floor)


class PullCaches:
    def __init__(self, config: CacheConfig) -> None:
        # (manifest, monotonic time ECR last returned it)
        self.manifests: ByteLRU[tuple[RepoKey, str], tuple[Manifest, float]] = ByteLRU(
            config.manifest_max_bytes)
        self._revalidate = config.manifest_revalidate_seconds
        # (repository, tag) → {accepted media types (None: all) → digest}. A client that
        # accepts fewer types may be answered a converted manifest (another digest), so each
        # Accept set has its own entry; all of a tag's entries go together.
        self.tags: TTLCache[tuple[RepoKey, str], dict[Accepted, str]] | None = (
            TTLCache(maxsize=100_000, ttl=config.tag_ttl_seconds)
            if config.tag_ttl_seconds > 0 else None)
        # (url, monotonic deadline, blob epoch read at): the URL's own lifetime may be
        # shorter than the TTL
        self.urls: TTLCache[tuple[RepoKey, str], tuple[str, float, int]] = TTLCache(
            maxsize=100_000, ttl=max(config.download_url_ttl_seconds, 0.001))
        self._url_ttl = config.download_url_ttl_seconds
        # (repository, digest) → (size of a blob the repository holds, blob epoch read at,
        # whether learned from an image that references it)
        self.members: TTLCache[tuple[RepoKey, str], tuple[int, int, bool]] = TTLCache(
            maxsize=1_000_000, ttl=MEMBERSHIP_SECONDS)
        # The same for the views of callers' own keys, trusted as long as a manifest
        self._caller_members: TTLCache[tuple[RepoKey, str], tuple[int, int, bool]] = TTLCache(
            maxsize=1_000_000, ttl=min(MEMBERSHIP_SECONDS,
                                       max(config.manifest_revalidate_seconds, 0.001)))
        # Repository -> the number of its last change (tags moved or removed, images
        # deleted), from one sequence, so a number is never given twice; and how many times
        # everything was flushed.
        self._changes: LRUCache[RepoKey, int] = LRUCache(maxsize=CHANGES_KEPT)
        # Repository -> the callers' views of it that answers were cached for.
        self._views: LRUCache[RepoKey, set[RepoKey]] = LRUCache(maxsize=CHANGES_KEPT)
        # Repositories answers were cached for since they were last found gone.
        self._held: LRUCache[RepoKey, None] = LRUCache(maxsize=CHANGES_KEPT)
        # The blob answers' counterpart: the last image deletion in each repository.
        self._deletions = _Deletions(maxsize=CHANGES_KEPT)
        self._numbers = itertools.count(1)
        self._issued = 0  # the last number taken from _numbers
        self._flushes = 0

    def version(self, repo: RepoKey) -> tuple[int, int]:
        """What a read of ``repo`` from ECR starts from; :meth:`remember` keeps its answer
        only if nothing changed since."""
        return self._flushes, self._changes.get(shared_repo(repo), 0)

    def changed(self, repo: RepoKey) -> None:
        """``repo`` changed (here, or told by another replica): answers being read now, by
        any identity, may predate it."""
        self._changes[shared_repo(repo)] = self._next_number()

    def _next_number(self) -> int:
        self._issued = next(self._numbers)
        return self._issued

    def blob_epoch(self) -> int:
        """What a read of blob answers (a download URL, a layer check) from ECR starts from:
        the answer is served only if no image of its repository was deleted since."""
        return self._issued

    def last_deletion(self, repo: RepoKey) -> int:
        """The number of the last image deletion in ``repo`` (in any identity's view)."""
        return self._deletions.last(shared_repo(repo))

    def _deleted_from(self, repo: RepoKey) -> None:
        self._deletions[shared_repo(repo)] = self._next_number()

    def _holds(self, repo: RepoKey) -> None:
        self._held[shared_repo(repo)] = None

    def held(self, repo: RepoKey) -> bool:
        """Whether answers of ``repo`` (in any identity's view) were cached since it was last
        found gone."""
        return shared_repo(repo) in self._held

    def _current(self, repo: RepoKey, read_at: int) -> bool:
        """Whether a blob answer read at ``read_at`` postdates the last deletion in
        ``repo`` (in any identity's view of it)."""
        return read_at >= self.last_deletion(repo)

    def views(self, repo: RepoKey) -> list[RepoKey]:
        """``repo`` and every caller's view of the same repository cached here."""
        shared = shared_repo(repo)
        return list({repo, shared, *self._views.get(shared, ())})

    # -- manifests and tags -----------------------------------------------------------------

    def manifest(self, repo: RepoKey, digest: str) -> Manifest | None:
        """The cached manifest, if ECR confirmed it within the revalidation bound."""
        found = self.manifests.get((repo, digest))
        if found is not None and time.monotonic() - found[1] > self._revalidate:
            found = None
        cache_event("manifest", "hit" if found is not None else "miss")
        return found[0] if found is not None else None

    def tag(self, repo: RepoKey, tag: str, accepted: Accepted = None) -> str | None:
        """The digest ``tag`` points to for clients accepting ``accepted``; the caller checks
        that the manifest's media type is one of them."""
        if self.tags is None:
            return None
        variants = self.tags.get((repo, tag))
        digest = None
        if variants is not None:
            # What the tag points to for every client (a push, a pull-through fill) answers a
            # narrower Accept set too, if the caller finds that manifest's type in the set:
            # ECR converts a manifest only for a client that does not accept its type.
            digest = variants.get(accepted) or variants.get(None)
        cache_event("tag", "hit" if digest is not None else "miss")
        return digest

    def remember(self, repo: RepoKey, manifest: Manifest, tag: str | None = None,
                 accepted: Accepted = None, *, since: tuple[int, int] | None = None) -> None:
        """Cache a manifest, and what ``tag`` points to for clients accepting ``accepted``.
        An answer for every type (``None``) is authoritative and replaces narrower ones.
        ``since``: the :meth:`version` the read from ECR started from; an answer read before
        a change to the repository is not kept (None: what this gateway just wrote)."""
        if since is not None and since != self.version(repo):
            return
        if callers_view(repo):
            self._views.setdefault(shared_repo(repo), set()).add(repo)
        self._holds(repo)
        self.manifests.put((repo, manifest.digest), (manifest, time.monotonic()),
                           len(manifest.body))
        if tag is None or self.tags is None:
            return
        variants = self.tags.get((repo, tag)) if accepted is not None else None
        if variants is None:
            self.tags[(repo, tag)] = {accepted: manifest.digest}
        else:  # expires with the entry it joins: a tag is never older than the TTL
            variants[accepted] = manifest.digest

    def forget_tag(self, repo: RepoKey, tag: str) -> None:
        """A tag moved or removed, in every identity's view."""
        self.changed(repo)
        if self.tags is not None:
            for view in self.views(repo):
                self.tags.pop((view, tag), None)

    def forget_manifest(self, repo: RepoKey, digest: str) -> None:
        """A deleted image: its manifest, every tag that pointed at it, and the repository's
        download URLs and membership (its layers may be gone with it), in every identity's
        view."""
        self.changed(repo)
        self._deleted_from(repo)
        views = self.views(repo)
        for view in views:
            self.manifests.pop((view, digest))
        if self.tags is not None:
            for key, variants in list(self.tags.items()):
                if key[0] in views and digest in variants.values():
                    self.tags.pop(key, None)

    def tagged(self, repo: RepoKey, tag: str) -> set[str]:
        """The digests ``tag`` is cached as pointing to, in any identity's view."""
        if self.tags is None:
            return set()
        found: set[str] = set()
        for view in self.views(repo):
            found.update((self.tags.get((view, tag)) or {}).values())
        return found

    def found_gone(self, repo: RepoKey, digests: set[str],
                   asked: Collection[str] | None = None) -> set[str]:
        """ECR found no image ``digests`` in ``repo`` (deleted behind the gateway): those
        this process holds a manifest of are forgotten as deleted, and returned (the other
        replicas are told of them: they may serve its layers' answers without reading the
        manifest again). ``asked``: the media types the read accepted (None: any). ECR
        answers "no such image" for one of another type, which is no sign it is gone:
        only a manifest held of one of them counts."""
        views = self.views(repo)
        held = set()
        for digest in digests:
            for view in views:
                found = self.manifests.get((view, digest))
                if found is not None and (asked is None or found[0].media_type in asked):
                    held.add(digest)
        for digest in held:
            self.forget_manifest(repo, digest)
        return held

    def found_repository_gone(self, repo: RepoKey) -> bool:
        """ECR found no repository ``repo``: every identity's answers of it are forgotten,
        as for a deletion of each of its images, if this process held any since it last
        found it gone (whether it did)."""
        if self._held.pop(shared_repo(repo), False) is False:
            return False
        self.changed(repo)
        self._deleted_from(repo)
        views = self.views(repo)
        for key in self.manifests.keys():
            if key[0] in views:
                self.manifests.pop(key)
        if self.tags is not None:
            for tag_key in list(self.tags.keys()):
                if tag_key[0] in views:
                    self.tags.pop(tag_key, None)
        return True

    def flush(self) -> None:
        """Forget every answer that another writer may have made wrong (used when this
        process may have missed other replicas' notices), and every answer on its way."""
        self._flushes += 1
        self._deletions.floor = self._next_number()  # a deletion anywhere may have been missed
        for key in self.manifests.keys():
            self.manifests.pop(key)
        if self.tags is not None:
            self.tags.clear()
        self.urls.clear()
        self.members.clear()
        self._caller_members.clear()
        self._views.clear()
        self._held.clear()

    # -- blobs ------------------------------------------------------------------------------

    def url(self, repo: RepoKey, digest: str) -> str | None:
        if self._url_ttl <= 0:
            return None
        found = self.urls.get((repo, digest))
        url = found[0] if found is not None and time.monotonic() < found[1] and self._current(
            repo, found[2]) else None
        cache_event("download_url", "hit" if url is not None else "miss")
        return url

    def remember_url(self, repo: RepoKey, digest: str, url: str, *,
                     since: int | None = None) -> None:
        """``since``: the :meth:`blob_epoch` the read from ECR started from."""
        if self._url_ttl <= 0:
            return
        keep = self._url_ttl
        if callers_view(repo):
            keep = min(keep, self._revalidate)
        remaining = _presigned_remaining(url)
        if remaining is not None:
            keep = min(keep, remaining / 2)
        if keep > 0:
            self._holds(repo)
            self.urls[(repo, digest)] = (url, time.monotonic() + keep,
                                         self._issued if since is None else since)

    def member_size(self, repo: RepoKey, digest: str) -> int | None:
        """The size of a blob the repository is known to hold (None: not known)."""
        found = self._members_of(repo).get((repo, digest))
        size = found[0] if found is not None and self._current(repo, found[1]) else None
        cache_event("membership", "hit" if size is not None else "miss")
        return size

    def referenced(self, repo: RepoKey, digest: str) -> bool:
        """Whether an image of the repository was found naming the blob (ECR serves it)."""
        found = self._members_of(repo).get((repo, digest))
        known = found is not None and found[2] and self._current(repo, found[1])
        cache_event("membership", "hit" if known else "miss")
        return known

    def remember_member(self, repo: RepoKey, digest: str, size: int, *,
                        since: int | None = None, referenced: bool = False) -> None:
        """``since``: the :meth:`blob_epoch` the read from ECR started from (None: what
        this gateway learned just now); ``referenced``: learned from an image naming it."""
        self._holds(repo)
        self._members_of(repo)[(repo, digest)] = (size, self._issued if since is None
                                                  else since, referenced)

    def _members_of(self, repo: RepoKey
                    ) -> TTLCache[tuple[RepoKey, str], tuple[int, int, bool]]:
        return self._caller_members if callers_view(repo) else self.members


def callers_view(repo: RepoKey) -> bool:
    """Whether ``repo`` is a repository as a caller's own keys see it (``Target.key`` then
    ends its registry part with ``@<access key id>``)."""
    return repo[0] is not None and "@" in repo[0]


def shared_repo(repo: RepoKey) -> RepoKey:
    """The repository a caller's view is of (its key without ``@<access key id>``)."""
    registry = repo[0]
    if registry is None or "@" not in registry:
        return repo
    registry = registry.rpartition("@")[0]
    return (registry or None, repo[1], repo[2])


def _presigned_remaining(url: str) -> float | None:
    """Seconds a SigV4-presigned URL stays valid, from its X-Amz-Date and X-Amz-Expires."""
    query = parse_qs(urlsplit(url).query)
    try:
        signed = calendar.timegm(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"))
        lifetime = int(query["X-Amz-Expires"][0])
    except (KeyError, IndexError, ValueError):
        return None
    return signed + lifetime - time.time()
