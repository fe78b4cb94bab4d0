"""A bounded local copy of the blobs a proxy-mode gateway has served.

Blobs are content-addressed, so one copy serves every repository and every upstream: the
cache knows nothing of ECR or of repositories. Whether a repository may read a digest is
still the backend's decision (the OCI handler asks it before serving a cached copy).

Layout under ``path``: ``sha256/<hex>`` holds complete, verified blobs; ``tmp/`` holds fills
in progress (emptied at start). Guarantees:

* Verified on fill: bytes are hashed while they stream to a temporary file, which is
  flushed to disk and renamed into place only if the digest (and the announced size)
  matches. A partly written file is therefore never visible, and a fill that fails for any
  reason (upstream error, client gone, disk full) leaves nothing behind. (No fsync: the
  check after a restart below covers what a crash could leave unwritten.)
* Cheap integrity on every read: the file's size is compared with the size it had when it
  was admitted, which catches truncation (and a file removed behind the cache's back).
  After a restart the first read of each file verifies its digest once before serving it,
  which catches corruption the process did not witness. A file that fails either check is
  dropped and the read falls through to the upstream, which fills the cache again.
* Bounded: least recently read files are evicted to keep the total under ``max_bytes``
  (room for a fill of known size is made before it starts; a blob larger than the whole
  budget is served but not kept). The read order survives restarts through file mtimes.
* Served by the OCI layer with aiohttp's FileResponse: sendfile and Range for free.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gateway.observability.metrics import cache_event

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass(frozen=True)
class CachedBlob:
    path: Path
    size: int


@dataclass
class _Entry:
    size: int
    verified: bool  # digest checked since this process started


def _hex(digest: str) -> str | None:
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or len(hexpart) != 64:
        return None
    try:
        int(hexpart, 16)
    except ValueError:
        return None
    return hexpart


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class BlobCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._blobs = root / "sha256"
        self._tmp = root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():
            leftover.unlink(missing_ok=True)  # fills cut short by a stop or a crash
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently read first
        self._filling: dict[str, int] = {}  # hex → bytes reserved for a fill in progress
        self._verifying: dict[str, asyncio.Task[str]] = {}
        self.total = 0
        found = []
        for item in os.scandir(self._blobs):
            if _hex(f"sha256:{item.name}") is None or not item.is_file():
                continue
            stat = item.stat()
            found.append((stat.st_mtime, item.name, stat.st_size))
        for _, name, size in sorted(found):
            self._entries[name] = _Entry(size, verified=False)
            self.total += size
        self._evict(0)
        log.info("blob cache at %s: %d blobs, %d bytes", root, len(self._entries), self.total)

    def path_of(self, digest: str) -> Path:
        return self._blobs / digest.partition(":")[2]

    def __contains__(self, digest: str) -> bool:
        hexpart = _hex(digest)
        return hexpart is not None and hexpart in self._entries

    # -- reads ------------------------------------------------------------------------------

    async def open(self, digest: str) -> CachedBlob | None:
        """The cached copy of ``digest``, checked; None on a miss (or a dropped bad copy)."""
        hexpart = _hex(digest)
        entry = self._entries.get(hexpart) if hexpart else None
        if hexpart is None or entry is None:
            cache_event("blob", "miss")
            return None
        path = self._blobs / hexpart
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = -1
        if size != entry.size:
            log.warning("blob cache: %s has %d bytes, expected %d; dropped", digest, size,
                        entry.size)
            self._corrupt(hexpart)
            return None
        if not entry.verified:
            if await self._verify(hexpart, path) != hexpart:
                log.warning("blob cache: %s does not match its digest; dropped", digest)
                self._corrupt(hexpart)
                return None
            entry.verified = True
        if self._entries.get(hexpart) is not entry:
            cache_event("blob", "miss")  # evicted or replaced while being verified
            return None
        self._entries.move_to_end(hexpart)
        with contextlib.suppress(OSError):
            now = time.time()
            os.utime(path, (now, now))  # read order for the next start
        cache_event("blob", "hit")
        return CachedBlob(path, size)

    async def _verify(self, hexpart: str, path: Path) -> str:
        """The file's sha256 (one hashing per file at a time, shared by concurrent reads)."""
        task = self._verifying.get(hexpart)
        if task is None:
            task = asyncio.create_task(asyncio.to_thread(self._hash_or_empty, path))
            self._verifying[hexpart] = task
            task.add_done_callback(lambda _: self._verifying.pop(hexpart, None))
        return await asyncio.shield(task)

    @staticmethod
    def _hash_or_empty(path: Path) -> str:
        try:
            return _hash_file(path)
        except OSError:
            return ""

    def _corrupt(self, hexpart: str) -> None:
        cache_event("blob", "corrupt")
        cache_event("blob", "miss")
        self._drop(hexpart)

    def _drop(self, hexpart: str) -> None:
        entry = self._entries.pop(hexpart, None)
        if entry is not None:
            self.total -= entry.size
        (self._blobs / hexpart).unlink(missing_ok=True)

    # -- fills ------------------------------------------------------------------------------

    def start_fill(self, digest: str, size: int | None = None) -> BlobFill | None:
        """A writer that admits ``digest`` once its bytes have been verified; None when the
        blob is cached already, being filled by another request, or cannot fit."""
        hexpart = _hex(digest)
        if hexpart is None or hexpart in self._entries or hexpart in self._filling:
            return None
        if size is not None and size > self.max_bytes:
            return None
        reserved = size or 0
        self._evict(reserved)
        tmp = self._tmp / f"{hexpart}.{uuid.uuid4().hex}"
        try:
            handle = open(tmp, "wb")
        except OSError as exc:
            log.warning("blob cache: cannot start a fill of %s: %s", digest, exc)
            return None
        self._filling[hexpart] = reserved
        return BlobFill(self, hexpart, tmp, handle, size)

    def _admit(self, hexpart: str, tmp: Path, size: int) -> None:
        os.replace(tmp, self._blobs / hexpart)
        self._filling.pop(hexpart, None)
        self._entries[hexpart] = _Entry(size, verified=True)
        self.total += size
        cache_event("blob", "fill")
        self._evict(0)

    def _fill_ended(self, hexpart: str) -> None:
        self._filling.pop(hexpart, None)

    def _evict(self, room: int) -> None:
        """Drop least recently read blobs until ``room`` more bytes fit under the limit."""
        budget = self.max_bytes - sum(self._filling.values()) - room
        while self._entries and self.total > budget:
            hexpart = next(iter(self._entries))
            self._drop(hexpart)
            cache_event("blob", "evict")


class BlobFill:
    """One blob on its way into the cache. Feed it the bytes in order with :meth:`write`,
    then :meth:`commit` (verify and admit) or :meth:`abort`. It never raises: a failed fill
    only means the blob is not cached."""

    def __init__(self, cache: BlobCache, hexpart: str, tmp: Path, handle: BinaryIO,
                 size: int | None) -> None:
        self._cache = cache
        self._hex = hexpart
        self._tmp = tmp
        self._handle: BinaryIO | None = handle
        self._expected = size
        self._hash = hashlib.sha256()
        self.written = 0

    @property
    def active(self) -> bool:
        return self._handle is not None

    def _write(self, chunk: bytes) -> None:
        assert self._handle is not None
        self._hash.update(chunk)
        self._handle.write(chunk)

    async def write(self, chunk: bytes) -> None:
        if self._handle is None:
            return
        self.written += len(chunk)
        if self.written > self._cache.max_bytes or (
                self._expected is not None and self.written > self._expected):
            self.abort()
            return
        try:
            await asyncio.to_thread(self._write, chunk)
        except (OSError, ValueError) as exc:
            log.warning("blob cache: fill of sha256:%s failed: %s", self._hex, exc)
            self.abort()

    def _close(self) -> None:
        # No fsync: after a crash the first read of every file verifies its digest, which
        # catches data the kernel had not written yet; a clean fill costs no disk flush.
        assert self._handle is not None
        self._handle.close()

    async def commit(self) -> bool:
        """Admit the blob if its bytes match the digest (and the announced size)."""
        if self._handle is None:
            return False
        if self._hash.hexdigest() != self._hex or (
                self._expected is not None and self.written != self._expected):
            log.warning("blob cache: upstream bytes of sha256:%s do not match it; not kept",
                        self._hex)
            self.abort()
            return False
        try:
            await asyncio.to_thread(self._close)
            self._handle = None
            self._cache._admit(self._hex, self._tmp, self.written)
        except OSError as exc:
            log.warning("blob cache: cannot keep sha256:%s: %s", self._hex, exc)
            self.abort()
            return False
        return True

    def abort(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None
            cache_event("blob", "fill_abandoned")
        self._tmp.unlink(missing_ok=True)
        self._cache._fill_ended(self._hex)
