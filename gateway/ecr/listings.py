"""Sorted listings (a repository's tags, the catalog) kept between page requests.

Paging through a repository of 50,000 tags with ``?n=100`` is 500 requests; without this
each one would read every ListImages page again. A listing is read from ECR once (every
page of it), kept sorted, and reused for ``cache.tag_ttl_seconds``, so each OCI page is a
bisect and a slice. A push or delete through this gateway edits the kept list at once (an
edit made while the list is being read is applied to what the read returns); other writers
are seen when the entry expires, as with the tag → digest cache (with Redis, other
replicas' changes are told at once: gateway/state/events.py). Memory is bounded by
``cache.listing_max_bytes`` (an estimate of the strings' size) and ``MAX_ENTRIES`` lists,
least recently read dropped first; a list bigger than the budget is never kept. Concurrent
reads of the same missing listing make one set of ECR calls.
"""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field

from gateway.config import CacheConfig
from gateway.ecr.caches import RepoKey, shared_repo
from gateway.ecr.routing import Target
from gateway.ecr.singleflight import SingleFlight
from gateway.observability.metrics import cache_event
from gateway.oci.request import Credentials

MAX_ENTRIES = 10_000
# What one kept name costs besides its characters: the str object and the list's pointer.
ITEM_OVERHEAD = 57


def _size(items: Iterable[str]) -> int:
    return sum(len(item) + ITEM_OVERHEAD for item in items)


@dataclass
class _Entry:
    items: list[str]  # sorted, no duplicates
    size: int
    expires: float


@dataclass
class _Loading:
    """Edits made while a listing is being read from ECR (replayed onto the result)."""

    edits: list[tuple[bool, str]] = field(default_factory=list)  # (added?, item)
    stale: bool = False  # forgotten meanwhile: the result is returned but not kept


class Listings:
    def __init__(self, ttl_seconds: float, max_bytes: int,
                 max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl_seconds
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.bytes = 0
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._loading: dict[Hashable, _Loading] = {}
        self._loads: SingleFlight[list[str]] = SingleFlight("listing")

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: Hashable,
                  load: Callable[[], Awaitable[Iterable[str]]]) -> list[str]:
        """The sorted listing ``key`` (shared: callers must not change it); ``load`` reads
        every page of it from ECR on a miss."""
        entry = self._entries.get(key)
        if entry is not None and entry.expires > time.monotonic():
            self._entries.move_to_end(key)
            cache_event("listing", "hit")
            return entry.items
        cache_event("listing", "miss")
        if key not in self._loading:  # from now on, edits are noted for the read
            self._loading[key] = _Loading()
        return await self._loads.do(key, lambda: self._load(key, load))

    async def _load(self, key: Hashable,
                    load: Callable[[], Awaitable[Iterable[str]]]) -> list[str]:
        loading = self._loading.setdefault(key, _Loading())
        try:
            found = set(await load())
        finally:
            if self._loading.get(key) is loading:
                del self._loading[key]
        for added, item in loading.edits:
            if added:
                found.add(item)
            else:
                found.discard(item)
        items = sorted(found)
        if not loading.stale:
            self._store(key, items)
        return items

    def _store(self, key: Hashable, items: list[str]) -> None:
        self._drop(key)
        if self.ttl <= 0:
            return
        size = _size(items)
        if size > self.max_bytes:
            return
        self._entries[key] = _Entry(items, size, time.monotonic() + self.ttl)
        self.bytes += size
        while self.bytes > self.max_bytes or len(self._entries) > self.max_entries:
            _, dropped = self._entries.popitem(last=False)
            self.bytes -= dropped.size
            cache_event("listing", "evict")

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size

    # -- what this gateway changed ----------------------------------------------------------

    def add(self, key: Hashable, item: str) -> None:
        """``item`` now exists (a tag pushed, a repository created)."""
        self._edit(key, True, item)

    def remove(self, key: Hashable, item: str) -> None:
        """``item`` is gone (a tag deleted)."""
        self._edit(key, False, item)

    def _edit(self, key: Hashable, added: bool, item: str) -> None:
        loading = self._loading.get(key)
        if loading is not None:
            loading.edits.append((added, item))
        entry = self._entries.get(key)
        if entry is None:
            return
        # A new list, never the one in place: a page being cut from it stays consistent.
        at = bisect.bisect_left(entry.items, item)
        present = at < len(entry.items) and entry.items[at] == item
        if added and not present:
            entry.items = [*entry.items[:at], item, *entry.items[at:]]
            change = _size((item,))
        elif not added and present:
            entry.items = entry.items[:at] + entry.items[at + 1:]
            change = -_size((item,))
        else:
            return
        entry.size += change
        self.bytes += change

    def forget(self, key: Hashable) -> None:
        """Read ``key`` from ECR next time (its changes are not known item by item)."""
        self._drop(key)
        loading = self._loading.get(key)
        if loading is not None:  # the read in flight may predate the change
            loading.stale = True

    def keys(self) -> list[Hashable]:
        return list(self._entries)

    def forget_tags(self, repo: RepoKey, *, keep: bool = False) -> None:
        """Another writer changed the tags of ``repo`` (a ``Target.key``), e.g. another
        replica or identity: every identity's tag list of that repository is read again
        next time (with ``keep``, but ``repo``'s own, which its writer updated)."""
        shared = shared_repo(repo)
        for key in {k for k in (*self._entries, *self._loading) if _is_tags_of(k, shared)}:
            if not (keep and key == ("tags", repo)):
                self.forget(key)

    def forget_catalogs(self) -> None:
        """A repository was created (here or, told by a notice, through another replica):
        every caller's catalog is read again."""
        for key in [k for k in (*self._entries, *self._loading) if _is_catalog(k)]:
            self.forget(key)

    def forget_all(self) -> None:
        """Changes made elsewhere may have been missed (no notices for a while): every
        listing, kept or being read, is read again."""
        for key in [*self._entries, *self._loading]:
            self.forget(key)

    @classmethod
    def for_config(cls, config: CacheConfig) -> Listings:
        return cls(config.tag_ttl_seconds, config.listing_max_bytes)


def tags_key(target: Target) -> Hashable:
    """A repository's tags, as the caller sees them (``Target.key`` names the identity)."""
    return ("tags", target.key)


def catalog_key(caller: Credentials | None) -> Hashable:
    """The catalog as this request's caller sees it (auth.mode aws: their own identity)."""
    return ("catalog", caller.access_key_id if caller is not None else None)


def _is_tags_of(key: Hashable, shared: RepoKey) -> bool:
    return (isinstance(key, tuple) and len(key) == 2 and key[0] == "tags"
            and shared_repo(key[1]) == shared)


def _is_catalog(key: Hashable) -> bool:
    return isinstance(key, tuple) and bool(key) and key[0] == "catalog"
