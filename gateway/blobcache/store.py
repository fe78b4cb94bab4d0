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
* Adopted copies: a caller that verified a blob itself (the pull-through's spool) hands it
  over with :meth:`BlobCache.adopt`, linked into place rather than written again.
* One fill per blob: a read that finds a fill of the same blob under way waits for it and
  is then served from the cache (:meth:`BlobCache.claim`, :meth:`BlobCache.wait_fill`),
  as long as the fill keeps up: one held back by a client that stops reading is no longer
  waited for (the others read on their own).
* Served from an open file: :meth:`BlobCache.open` hands out the file already opened, so an
  eviction between the lookup and the send cannot turn a hit into a missing file.
* Private: ``sha256/`` and ``tmp/`` are folders only the gateway's user can enter (mode
  0700, refused at start when another user owns them), fills are files of mode 0600, and
  nothing is read through a symbolic link; a file found at start that is not a plain file
  of the gateway's user, writable by nobody else, is dropped (ecr_model/private_files.py). The
  size check on reads relies on that: nobody else can rewrite a verified file.
* Bounded while filling too: the fills under way reserve their sizes (one of unknown size,
  the bytes it wrote so far) and a fill that does not fit beside them is relayed without
  being kept, so concurrent cold reads of many large blobs never take more than
  ``max_bytes`` between them.
* The event loop never waits for the disk: opening, hashing, writing and unlinking run in
  worker threads. A dropped file is first renamed into ``tmp/`` (a cheap metadata change)
  so its unlink, which frees all of its pages and can take a long time for a large file,
  never races a later fill of the same digest.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ecr_model.private_files import create_private, open_read, own_regular_file, private_dir
from gateway.observability.metrics import cache_event

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
# A read waits for another read's fill of the same blob only while that fill writes at
# least FILL_WAIT_MIN_BYTES every FILL_WAIT_SECONDS (:meth:`BlobCache.wait_fill`).
FILL_WAIT_SECONDS = 5.0
FILL_WAIT_MIN_BYTES = 1 << 20


@dataclass(frozen=True)
class CachedBlob:
    """A cached blob, opened: the reader serves from ``file`` and closes it."""

    file: BinaryIO
    size: int
    on_disk: bool = False  # written past the page cache: read it the same way


@dataclass
class _Entry:
    size: int
    verified: bool  # digest checked since this process started
    # Written past the page cache (an adopted spool that was): reading it through the page
    # cache would allocate it there after all (gateway/disk/direct_io.py). Fills, and files
    # verified after a start, are read through the page cache, where they are.
    on_disk: bool = False


def _hex(digest: str) -> str | None:
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or len(hexpart) != 64:
        return None
    try:
        int(hexpart, 16)
    except ValueError:
        return None
    return hexpart


def _hash_fd(fd: int) -> str:
    """The sha256 of the open file ``fd`` (read by offset: the served handle stays where it
    is). The very file that is then served, whatever its path names meanwhile."""
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _open_blob(path: Path) -> BinaryIO:
    return os.fdopen(open_read(path), "rb")


def _create_fill(path: Path) -> BinaryIO:
    return os.fdopen(create_private(path), "wb")


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # left for the next start, which empties tmp/
            log.warning("blob cache: cannot remove %s: %s", path, exc)


class BlobCache:
    def __init__(self, root: Path, max_bytes: int, *,
                 fill_wait_seconds: float = FILL_WAIT_SECONDS,
                 fill_wait_min_bytes: int = FILL_WAIT_MIN_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.fill_wait_seconds = fill_wait_seconds
        self.fill_wait_min_bytes = fill_wait_min_bytes
        self._blobs = root / "sha256"
        self._tmp = root / "tmp"
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        private_dir(self._blobs)
        private_dir(self._tmp)
        for leftover in self._tmp.iterdir():
            leftover.unlink(missing_ok=True)  # fills cut short, drops not finished
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently read first
        self._fills: dict[str, BlobFill] = {}  # hex → the fill in progress
        self._verifying: dict[str, asyncio.Task[str]] = {}
        self._unlinking: set[asyncio.Future[None]] = set()
        self.total = 0
        found = []
        for item in os.scandir(self._blobs):
            stat = item.stat(follow_symlinks=False)
            if _hex(f"sha256:{item.name}") is None or not own_regular_file(stat):
                if not item.is_dir(follow_symlinks=False):
                    # A link, or a file someone else could rewrite once it is verified.
                    log.warning("blob cache: dropped %s, not a private file", item.name[:80])
                    Path(item.path).unlink(missing_ok=True)
                continue
            found.append((stat.st_mtime, item.name, stat.st_size))
        for _, name, size in sorted(found):
            self._entries[name] = _Entry(size, verified=False)
            self.total += size
        _unlink_all(self._evict(0))  # before serving: no loop to keep responsive yet
        log.info("blob cache at %s: %d blobs, %d bytes", root, len(self._entries), self.total)

    def path_of(self, digest: str) -> Path:
        return self._blobs / digest.partition(":")[2]

    def __contains__(self, digest: str) -> bool:
        hexpart = _hex(digest)
        return hexpart is not None and hexpart in self._entries

    # -- reads ------------------------------------------------------------------------------

    async def open(self, digest: str) -> CachedBlob | None:
        """The cached copy of ``digest``, checked and opened; None on a miss (or a dropped
        bad copy). The caller closes the file."""
        hexpart = _hex(digest)
        entry = self._entries.get(hexpart) if hexpart else None
        if hexpart is None or entry is None:
            cache_event("blob", "miss")
            return None
        path = self._blobs / hexpart
        try:
            handle: BinaryIO | None = await asyncio.to_thread(_open_blob, path)
        except FileNotFoundError:
            handle = None  # removed behind the cache's back: dropped below
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                log.warning("blob cache: cannot open %s: %s", digest, exc)
                cache_event("blob", "miss")
                return None
            handle = None  # a link in place of the file: never read through, dropped below
        try:
            size = os.fstat(handle.fileno()).st_size if handle is not None else -1
            if size != entry.size:
                log.warning("blob cache: %s has %d bytes, expected %d; dropped", digest, size,
                            entry.size)
                if self._entries.get(hexpart) is entry:
                    self._corrupt(hexpart)
                return None
            assert handle is not None
            if not entry.verified:
                if await self._verify(hexpart, handle) != hexpart:
                    log.warning("blob cache: %s does not match its digest; dropped", digest)
                    if self._entries.get(hexpart) is entry:
                        self._corrupt(hexpart)
                    return None
                entry.verified = True
            if self._entries.get(hexpart) is not entry:
                cache_event("blob", "miss")  # evicted or replaced while being verified
                return None
            self._entries.move_to_end(hexpart)
            with contextlib.suppress(OSError):
                now = time.time()
                os.utime(handle.fileno(), (now, now))  # read order for the next start
            cache_event("blob", "hit")
            blob, handle = CachedBlob(handle, size, entry.on_disk), None
            return blob
        finally:
            if handle is not None:
                _close_later(handle)

    async def _verify(self, hexpart: str, handle: BinaryIO) -> str:
        """The open file's sha256 (one hashing per file at a time, shared by concurrent
        reads, which opened the same file: one is replaced only after its entry is gone).
        Hashed through a descriptor of its own, which a read that ends meanwhile (its
        client gone) does not close."""
        task = self._verifying.get(hexpart)
        if task is None:
            task = asyncio.create_task(asyncio.to_thread(self._hash_or_empty,
                                                         os.dup(handle.fileno())))
            self._verifying[hexpart] = task
            task.add_done_callback(lambda _: self._verifying.pop(hexpart, None))
        return await asyncio.shield(task)

    @staticmethod
    def _hash_or_empty(fd: int) -> str:
        try:
            return _hash_fd(fd)
        except OSError:
            return ""
        finally:
            os.close(fd)

    def _corrupt(self, hexpart: str) -> None:
        cache_event("blob", "corrupt")
        cache_event("blob", "miss")
        self._unlink_later(self._drop(hexpart))

    def _drop(self, hexpart: str) -> list[Path]:
        """Forget ``hexpart``; its file moves aside and is returned for unlinking."""
        entry = self._entries.pop(hexpart, None)
        if entry is not None:
            self.total -= entry.size
        aside = self._tmp / f"{hexpart}.dropped.{uuid.uuid4().hex}"
        try:
            os.rename(self._blobs / hexpart, aside)
        except FileNotFoundError:
            return []
        return [aside]

    def _unlink_later(self, paths: list[Path]) -> None:
        """Unlink in a worker thread: freeing a large file's pages takes long."""
        if not paths:
            return
        future = asyncio.get_running_loop().run_in_executor(None, _unlink_all, paths)
        self._unlinking.add(future)
        future.add_done_callback(self._unlinking.discard)

    # -- fills ------------------------------------------------------------------------------

    def claim(self, digest: str) -> BlobFill | None:
        """The fill of ``digest`` for the caller to make; None when the blob is cached
        already, not cacheable, or being filled by another read (see :meth:`wait_fill`)."""
        hexpart = _hex(digest)
        if hexpart is None or hexpart in self._entries or hexpart in self._fills:
            return None
        fill = BlobFill(self, hexpart)
        self._fills[hexpart] = fill
        return fill

    def known(self, digest: str) -> bool:
        """Whether ``digest`` is cached or being filled, without touching it (no read order,
        no verification, no metric): what a read asks before it knows it may have it."""
        hexpart = _hex(digest)
        return hexpart is not None and (hexpart in self._entries or hexpart in self._fills)

    def stall_watch(self, fill: BlobFill) -> Callable[[], bool]:
        """A check to make now and then while ``fill`` runs: whether it stalled, that is
        wrote less than ``fill_wait_min_bytes`` per ``fill_wait_seconds`` since the last
        check at least that long ago (a fill found stalled is marked so)."""
        mark = [time.monotonic(), fill.written]

        def stalled() -> bool:
            if fill.stalled or fill.ended.is_set():
                return fill.stalled
            now = time.monotonic()
            elapsed = now - mark[0]
            if elapsed < self.fill_wait_seconds:
                return False
            if fill.written - mark[1] < self.fill_wait_min_bytes * elapsed / \
                    self.fill_wait_seconds:
                fill.mark_stalled()
                return True
            mark[:] = [now, fill.written]
            return False

        return stalled

    def count_refused(self) -> None:
        """A read refused a blob the cache holds (or is filling) for another repository:
        counted as the miss it is from the reader's repository, so that the metrics tell
        nobody what other repositories hold."""
        cache_event("blob", "miss")

    async def wait_fill(self, digest: str) -> bool:
        """Wait for a fill of ``digest`` in progress to end; False when there was none, or
        when it does not keep up (then the caller reads on its own, without the cache).

        A fill goes at the pace of the client it streams to: one that stops reading would
        otherwise hold every read of the blob, in every repository, for as long as it keeps
        its connection open. A fill that wrote less than ``fill_wait_min_bytes`` in
        ``fill_wait_seconds`` is marked stalled, and no read waits for it again."""
        hexpart = _hex(digest)
        fill = self._fills.get(hexpart) if hexpart else None
        if fill is None or fill.stalled:
            return False
        cache_event("blob", "fill_shared")
        while True:
            seen = fill.written
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fill.ended.wait(), self.fill_wait_seconds)
            if fill.ended.is_set():
                return True
            if fill.written - seen < self.fill_wait_min_bytes:
                fill.mark_stalled()
                return False

    async def adopt(self, digest: str, size: int, place: Callable[[Path], None], *,
                    on_disk: bool = False) -> bool:
        """Admit a copy of ``digest`` that the caller has verified already (a pull-through's
        spool, say): ``place`` puts its ``size`` bytes at the path it is given, in a worker
        thread (a link costs no write); ``on_disk``: they were written past the page cache.
        Whether the cache holds the blob afterwards."""
        hexpart = _hex(digest)
        if hexpart is None or size > self.max_bytes:
            return False
        if hexpart in self._entries:
            return True
        self._unlink_later(self._evict(size))
        tmp = self._tmp / f"{hexpart}.{uuid.uuid4().hex}"
        try:
            await asyncio.to_thread(place, tmp)
        except OSError as exc:
            log.warning("blob cache: cannot take in %s: %s", digest, exc)
            self._unlink_later([tmp])
            return False
        if hexpart in self._entries:  # a read's fill got there first: the same bytes
            self._unlink_later([tmp])
            return True
        os.replace(tmp, self._blobs / hexpart)
        self._entries[hexpart] = _Entry(size, verified=True, on_disk=on_disk)
        self.total += size
        cache_event("blob", "adopt")
        self._unlink_later(self._evict(0))
        return True

    def _room_beside(self, fill: BlobFill) -> int:
        """The bytes of the budget the other fills under way leave ``fill``."""
        return self.max_bytes - sum(f.reserved for f in self._fills.values() if f is not fill)

    def _reserve(self, fill: BlobFill, size: int | None) -> Path | None:
        """Make room for a fill; the temporary file to write (None: it cannot be kept: it is
        larger than the budget, or than what the fills under way leave of it)."""
        if size is not None and size > self._room_beside(fill):
            return None
        fill.reserved = size or 0
        self._unlink_later(self._evict(0))
        return self._tmp / f"{fill.hexpart}.{uuid.uuid4().hex}"

    def _admit(self, fill: BlobFill, tmp: Path, size: int) -> None:
        os.replace(tmp, self._blobs / fill.hexpart)
        replaced = self._entries.pop(fill.hexpart, None)  # adopted meanwhile: same bytes
        if replaced is not None:
            self.total -= replaced.size
        self._entries[fill.hexpart] = _Entry(size, verified=True)
        self.total += size
        cache_event("blob", "fill")
        self._fill_ended(fill)

    def _release(self, fill: BlobFill) -> None:
        """The fill will keep nothing: reads waiting for it go ahead (each on its own)."""
        if self._fills.get(fill.hexpart) is fill:
            del self._fills[fill.hexpart]
        fill.ended.set()

    def _fill_ended(self, fill: BlobFill) -> None:
        self._release(fill)
        self._unlink_later(self._evict(0))

    def _evict(self, room: int) -> list[Path]:
        """Drop least recently read blobs until ``room`` more bytes fit under the limit; the
        files to unlink are returned."""
        budget = self.max_bytes - sum(f.reserved for f in self._fills.values()) - room
        dropped: list[Path] = []
        while self._entries and self.total > budget:
            dropped += self._drop(next(iter(self._entries)))
            cache_event("blob", "evict")
        return dropped


def _close(handle: BinaryIO) -> None:
    with contextlib.suppress(OSError):  # a fill's copy that is abandoned anyway
        handle.close()


def _close_later(handle: BinaryIO) -> None:
    asyncio.get_running_loop().run_in_executor(None, _close, handle)


class BlobFill:
    """One blob on its way into the cache, claimed by one read. :meth:`start` it with the
    size the upstream announced, feed it the bytes in order with :meth:`write`, then
    :meth:`commit` (verify and admit) or :meth:`abort`. It never raises.

    Every byte written is hashed, whether or not the copy can be kept (too large, disk
    full): :meth:`commit` tells whether the bytes matched the digest either way, so the
    reader relaying them knows whether to complete its response."""

    def __init__(self, cache: BlobCache, hexpart: str) -> None:
        self._cache = cache
        self.hexpart = hexpart
        self.reserved = 0  # bytes of the budget set aside for this fill
        self.ended = asyncio.Event()
        self._tmp: Path | None = None
        self._handle: BinaryIO | None = None
        self._expected: int | None = None
        self._hash = hashlib.sha256()
        self._done = False
        self.written = 0
        self.stalled = False  # too slow to be waited for (BlobCache.wait_fill)

    def mark_stalled(self) -> None:
        """Too slow to be waited for: said once (a metric event and a warning)."""
        if not self.stalled:
            self.stalled = True
            cache_event("blob", "fill_stalled")
            log.warning("blob cache: the fill of sha256:%s stalled (its client reads too "
                        "slowly): reads of it go on without waiting", self.hexpart)

    async def start(self, size: int | None) -> None:
        self._expected = size
        tmp = self._cache._reserve(self, size)
        handle: BinaryIO | None = None
        if tmp is not None:
            try:
                handle = await asyncio.to_thread(_create_fill, tmp)
            except OSError as exc:
                log.warning("blob cache: cannot start a fill of sha256:%s: %s", self.hexpart,
                            exc)
        if handle is None or self._done:  # not keepable, or aborted meanwhile
            if handle is not None:
                _close_later(handle)
            self._keep_nothing(tmp)
            return
        self._handle, self._tmp = handle, tmp

    def _step(self, chunk: bytes, handle: BinaryIO | None) -> None:
        self._hash.update(chunk)
        if handle is not None:
            handle.write(chunk)

    async def write(self, chunk: bytes) -> None:
        if self._done:
            return
        self.written += len(chunk)
        handle = self._handle
        if handle is not None and self._expected is None:
            self.reserved = self.written  # of unknown size: holds what it wrote so far
        if handle is not None and (self.written > self._cache._room_beside(self) or (
                self._expected is not None and self.written > self._expected)):
            self._keep_nothing(self._tmp)
            handle = None
        try:
            await asyncio.to_thread(self._step, chunk, handle)
        except (OSError, ValueError) as exc:
            log.warning("blob cache: fill of sha256:%s failed: %s", self.hexpart, exc)
            self._keep_nothing(self._tmp)

    def matches(self) -> bool:
        """Whether the bytes written so far are the whole blob."""
        return self._hash.hexdigest() == self.hexpart and (
            self._expected is None or self.written == self._expected)

    async def commit(self) -> bool:
        """Whether the bytes matched the digest (and the announced size); the copy is
        admitted if it could be kept."""
        if self._done:
            return False
        matched = self.matches()
        if not matched:
            log.warning("blob cache: upstream bytes of sha256:%s do not match it; not kept",
                        self.hexpart)
            self.abort()
            return False
        handle, tmp = self._handle, self._tmp
        if handle is None or tmp is None:
            self.abort()
            return True
        try:
            # No fsync: after a crash the first read of every file verifies its digest,
            # which catches data the kernel had not written yet.
            await asyncio.to_thread(handle.close)
            self._handle = None
            if not self._done:
                self._done = True
                self._cache._admit(self, tmp, self.written)
        except OSError as exc:
            log.warning("blob cache: cannot keep sha256:%s: %s", self.hexpart, exc)
            self.abort()
        return True

    def _keep_nothing(self, tmp: Path | None) -> None:
        """Stop keeping a copy (the bytes are still hashed)."""
        handle, self._handle, self._tmp = self._handle, None, None
        if handle is not None:
            _close_later(handle)
            cache_event("blob", "fill_abandoned")
        self.reserved = 0
        self._cache._unlink_later([tmp] if tmp is not None else [])
        self._cache._release(self)

    def abort(self) -> None:
        """End the fill without keeping anything (a no-op once committed)."""
        if self._done:
            return
        self._keep_nothing(self._tmp)
        self._done = True
        self._cache._fill_ended(self)
