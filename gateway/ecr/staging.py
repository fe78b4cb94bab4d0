"""A bounded, content-addressed store of blobs uploaded through this gateway.

ECR only hands out download URLs for layers that some image references, yet clients read a
blob back right after uploading it (and the OCI conformance workflow does). Every upload is
spooled here as it streams to ECR; once the upload's bytes were checked against the digest,
the spool becomes ``blobs/sha256/<hex>`` and can be served until an image references it
(then ECR serves it) or until the least recently used entries are evicted to stay under
``max_bytes``.

Blobs staged by an earlier run are served only once their bytes have been checked against
the digest (first read after the start, in a worker thread): the process may have died
before the kernel wrote them, or the files may have changed while the gateway was down. One
that does not match is dropped, and the read goes to ECR instead.

The folder is the gateway user's alone (mode 0700, ecr_model/private_files.py): spools and
staged blobs are private repositories' bytes, and a staged blob is served without its
digest being checked again.

With ``direct``, spools are written past the page cache where the file system allows it
(see gateway/disk/direct_io.py for when that pays).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ecr_model.private_files import private_dir
from gateway.disk.direct_io import ALIGN, write_direct
from gateway.ecr.staged_waiters import Waiters
from gateway.observability.metrics import UPLOAD_SPOOL_BYTES
from gateway.state.sessions import SESSION_ID

_IOV_MAX = 1024  # Linux's limit on buffers per writev
# Eviction looks at every staged blob (its size and last read), a cost that grows with their
# number; it is done when this process's own count says the store may be over its bound, or
# when the last look is older than this (other processes sharing the folder stage blobs
# this one does not count: the store may exceed its bound by what they stage meanwhile).
_LOOK_AGAIN_SECONDS = 10.0
# A look that finds the store over its bound evicts down to this share of it, so that the
# promotes after it have room without a look each (a store full of small blobs would
# otherwise be scanned whole on every promote).
_LOW_WATER = 0.9
# While the spools seem to hold their bound, a refused spool looks at the folder again at most
# this often (uploads finished meanwhile, here or in other processes, free room).
_LOOK_WHEN_FULL_SECONDS = 1.0


class SpoolsFull(Exception):
    """The spools of unfinished uploads take ``spools_max_bytes``: this one grows no more."""


class StagingStore:
    def __init__(self, root: Path, max_bytes: int, spool_max_age: float = 86400.0, *,
                 spools_max_bytes: int = 0, direct: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        private_dir(root)
        self._spools = root / "spool"
        self._blobs = root / "blobs" / "sha256"
        self._spools.mkdir(parents=True, exist_ok=True)
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._max_bytes = max_bytes
        self._direct = direct
        self._clock = clock
        # Bytes staged as of the last look, plus those this process promoted since (None:
        # no look yet), and when that look was.
        self._held: int | None = None
        self._looked = 0.0
        # The repositories each staged blob was uploaded to and no image of theirs
        # references yet: the store is keyed by digest, so a manifest in one of them must
        # not take the copy away from the others (ECR serves a layer only where an image
        # references it).
        self._waiting = Waiters(root / "waiting")
        # A blob staged for one repository is never dropped, in between, for another's image.
        self._staged_lock = threading.Lock()
        # Bytes the spools of unfinished uploads may take (0: no bound), and what they take
        # as of the last count plus what was appended and dropped since (None: no count
        # yet). Appends run in worker threads, hence the lock.
        self._spools_max = spools_max_bytes
        self._spooled: int | None = None
        self._spools_counted = 0.0
        self._spooled_lock = threading.Lock()
        self.empty = root / "empty"
        self.empty.touch()
        # Spools of a previous run continue with their sessions (a restarted gateway resumes
        # uploads); the process may have died in the middle of a write, which the check
        # before promotion catches (a new process did not send the upload's earlier parts:
        # it hashes the spool).
        # Those no upload touched for long are dropped.
        horizon = time.time() - spool_max_age
        for leftover in self._spools.iterdir():
            try:
                if leftover.stat().st_mtime < horizon:
                    leftover.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
        self._unverified = {entry.name for entry in os.scandir(self._blobs)}
        self._waiting.prune(self._unverified)
        self._verifying: dict[str, asyncio.Task[bool]] = {}

    def spool_path(self, upload_id: str) -> Path:
        if not SESSION_ID.fullmatch(upload_id):  # whatever a store handed over, no path
            raise ValueError(f"not an upload session id: {upload_id[:80]!r}")
        return self._spools / upload_id

    def append(self, upload_id: str, received_before: int,
               data: bytes | memoryview | list[memoryview]) -> None:
        """Append to an upload's spool if it holds exactly the bytes received so far.

        A spool that fell behind (its earlier bytes went to another replica, or a write
        failed) is dropped for good: the blob is then simply not staged.
        """
        path = self.spool_path(upload_id)
        try:
            held = path.stat()
        except FileNotFoundError:
            if received_before != 0:
                return
            size = 0
        else:
            if _staged_as_blob(path, held):
                return
            size = held.st_size
        if size > received_before:
            # Bytes a process that died wrote after the session's last saved offset: the
            # client sends them again from that offset.
            os.truncate(path, received_before)
        elif size < received_before:
            path.unlink(missing_ok=True)
            return
        pieces = data if isinstance(data, list) else [data]
        self._take_spool_room(sum(len(piece) for piece in pieces))
        if self._direct:
            if write_direct(path, received_before, pieces):
                return
            # An unaligned start (a client's odd chunk) waits for the page cache; a file
            # system without direct I/O does for good.
            self._direct = received_before % ALIGN != 0
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            _write_all(fd, pieces)
        finally:
            os.close(fd)

    def _take_spool_room(self, size: int) -> None:
        """Count ``size`` more spooled bytes, or raise :class:`SpoolsFull` when they do not
        fit: a client that opens uploads and never finishes them cannot fill the disk."""
        if not self._spools_max:
            return
        with self._spooled_lock:
            now = self._clock()
            since = now - self._spools_counted
            if self._spooled is None or since >= _LOOK_AGAIN_SECONDS or (
                    self._spooled + size > self._spools_max and since >= _LOOK_WHEN_FULL_SECONDS):
                self._spooled = self._spool_bytes()
                self._spools_counted = now
            if self._spooled + size > self._spools_max:
                raise SpoolsFull(self._spooled)
            self._spooled += size
            UPLOAD_SPOOL_BYTES.set(self._spooled)

    def _spool_bytes(self) -> int:
        """What the spools take on disk, staged blobs' links aside (counted as staged)."""
        total = 0
        for entry in os.scandir(self._spools):
            try:
                held = entry.stat()
            except FileNotFoundError:  # dropped meanwhile
                continue
            if held.st_nlink == 1:
                total += held.st_size
        return total

    def _spool_gone(self, size: int) -> None:
        if self._spools_max:
            with self._spooled_lock:
                if self._spooled is not None:
                    self._spooled = max(0, self._spooled - size)
                    UPLOAD_SPOOL_BYTES.set(self._spooled)

    def spool_range(self, upload_id: str, start: int, end: int) -> bytes | None:
        """Bytes ``start`` to ``end`` of a spool that holds them (None: it does not: gone, or
        short after the machine went down). Bytes beyond ``end`` (a process that died wrote
        them) do not matter: the spool is written in stream order."""
        try:
            with open(self.spool_path(upload_id), "rb") as handle:
                if os.fstat(handle.fileno()).st_size < end:
                    return None
                handle.seek(start)
                return handle.read(end - start)
        except FileNotFoundError:
            return None

    def holds(self, upload_id: str, size: int) -> bool:
        """Whether an upload's spool holds its first ``size`` bytes."""
        try:
            return self.spool_path(upload_id).stat().st_size >= size
        except FileNotFoundError:
            return False

    def spool_digest(self, upload_id: str, size: int) -> str | None:
        """The sha256 digest of a spool holding exactly ``size`` bytes (None: no such spool).

        A pass over the file: only for uploads ECR does not check, or whose earlier parts
        another process sent."""
        path = self.spool_path(upload_id)
        hasher = hashlib.sha256()
        try:
            with open(path, "rb") as handle:
                if os.fstat(handle.fileno()).st_size != size:
                    return None
                while chunk := handle.read(1 << 20):
                    hasher.update(chunk)
        except FileNotFoundError:
            return None
        return "sha256:" + hasher.hexdigest()

    def promote(self, upload_id: str, digest: str, size: int, ending: bytes = b"",
                repository: str | None = None) -> None:
        """Keep a finished spool under its digest as well; the caller :meth:`discard`s the
        spool once the upload's session is gone. The caller has checked that the upload's
        bytes hash to ``digest``; the spool holds them if it has ``size`` bytes and ends with
        ``ending`` (the session's tail, which another process may have received).
        ``repository`` (:func:`repository_key`): where it was uploaded, when known."""
        path = self.spool_path(upload_id)
        try:
            with open(path, "rb") as handle:
                held = os.fstat(handle.fileno()).st_size
                handle.seek(max(0, held - len(ending)))
                if held != size or handle.read() != ending:
                    path.unlink(missing_ok=True)
                    return
        except FileNotFoundError:
            return
        # Linked, not renamed: the spool stays until the caller drops it with the upload's
        # session, so a process that dies in between still finds the upload's bytes there.
        linked = path.with_name(f"{path.name}.kept")
        linked.unlink(missing_ok=True)
        os.link(path, linked)
        name = digest.split(":", 1)[1]
        with self._staged_lock:
            os.replace(linked, self.blob_path(digest))
            if repository is not None:
                self._waiting.add(name, repository)
        self._unverified.discard(name)  # checked just now
        if self._held is not None:
            self._held += size
        if (self._held is None or self._held > self._max_bytes
                or self._clock() - self._looked >= _LOOK_AGAIN_SECONDS):
            self._held = self._evict()
            self._looked = self._clock()

    def cut_back(self, upload_id: str, size: int) -> None:
        """Cut a spool longer than ``size`` bytes back to them (what its upload holds)."""
        path = self.spool_path(upload_id)
        try:
            held = path.stat()
            if held.st_size > size and not _staged_as_blob(path, held):
                os.truncate(path, size)
                self._spool_gone(held.st_size - size)
        except FileNotFoundError:
            pass

    def discard(self, upload_id: str) -> None:
        path = self.spool_path(upload_id)
        try:
            held = path.stat()
        except FileNotFoundError:
            return
        path.unlink(missing_ok=True)
        self._spool_gone(held.st_size)  # a promoted one's too: its appends were counted

    def spool_entries(self) -> list[tuple[str, float]]:
        """Every file in the spool folder, with when it was last written: the uploads'
        spools (named by session id) and links :meth:`promote` is making, or left half-made
        when the process died between its two steps (``<session id>.kept``)."""
        entries = []
        for entry in os.scandir(self._spools):
            try:
                entries.append((entry.name, entry.stat().st_mtime))
            except FileNotFoundError:  # dropped meanwhile
                continue
        return entries

    def drop_entry(self, name: str) -> None:
        """Drop a spool, or a half-made link, by its :meth:`spool_entries` name."""
        upload_id = name.removesuffix(".kept")
        path = self.spool_path(upload_id)
        path.with_name(name).unlink(missing_ok=True)

    def blob_path(self, digest: str) -> Path:
        return self._blobs / digest.split(":", 1)[1]

    async def find(self, digest: str) -> Path | None:
        """The staged copy of ``digest``; None when there is none (or it was dropped)."""
        if not digest.startswith("sha256:"):
            return None
        path = self.blob_path(digest)
        if path.name in self._unverified and not await self._verify(digest, path):
            return None
        try:
            os.utime(path, (time.time(), path.stat().st_mtime))  # atime: LRU order
        except FileNotFoundError:
            return None
        return path

    async def _verify(self, digest: str, path: Path) -> bool:
        """Check a blob of an earlier run once (shared by concurrent reads); drop it if bad."""
        task = self._verifying.get(path.name)
        if task is None:
            task = asyncio.create_task(asyncio.to_thread(_keep_if_intact, path, digest))
            self._verifying[path.name] = task

            def done(_: asyncio.Task[bool]) -> None:
                self._verifying.pop(path.name, None)
                self._unverified.discard(path.name)

            task.add_done_callback(done)
        return await asyncio.shield(task)

    def digests(self) -> list[str]:
        """Every staged blob's digest (a pass over the folder)."""
        return [f"sha256:{entry.name}" for entry in os.scandir(self._blobs)]

    def forget(self, digests: list[str], repository: str) -> None:
        """Drop blobs ECR can now serve itself in ``repository`` (an image there references
        them), unless they were uploaded to other repositories too that no image of theirs
        references yet (whichever process, or run of this one, staged them)."""
        for digest in digests:
            if not digest.startswith("sha256:"):
                continue
            path = self.blob_path(digest)
            with self._staged_lock:
                if self._waiting.release(path.name, repository):
                    path.unlink(missing_ok=True)

    def _evict(self) -> int:
        """Look at every staged blob; over the bound, drop the least recently read down to
        the low-water mark. Returns the bytes left staged."""
        entries = []
        for entry in os.scandir(self._blobs):
            try:
                stat = entry.stat()
            except FileNotFoundError:  # forgotten meanwhile (an image now references it)
                continue
            entries.append((stat.st_atime, stat.st_size, entry.path))
        total = sum(size for _, size, _ in entries)
        if total <= self._max_bytes:
            return total
        for _, size, path in sorted(entries):
            if total <= self._max_bytes * _LOW_WATER:
                break
            Path(path).unlink(missing_ok=True)
            self._waiting.drop(os.path.basename(path))
            total -= size
        return total


def repository_key(registry_id: str | None, repository: str) -> str:
    """A repository as :meth:`StagingStore.promote` and :meth:`StagingStore.forget` name it."""
    return f"{registry_id or ''}/{repository}"


def _staged_as_blob(path: Path, held: os.stat_result) -> bool:
    """Whether a spool is also a staged blob (:meth:`StagingStore.promote` links the two):
    its upload was finished, and a blob served as its digest is never written again. The
    spool's name is dropped, the staged copy kept."""
    if held.st_nlink < 2:
        return False
    path.unlink(missing_ok=True)
    return True


def _write_all(fd: int, pieces: list[bytes | memoryview] | list[memoryview]) -> None:
    """One writev per batch of chunks rather than one write call per chunk."""
    for start in range(0, len(pieces), _IOV_MAX):
        batch = pieces[start:start + _IOV_MAX]
        written = os.writev(fd, batch)
        for piece in batch:  # after a short write (rare), the rest piece by piece
            rest = memoryview(piece)[written:]
            written = max(0, written - len(piece))
            while rest:
                rest = rest[os.write(fd, rest):]


def _keep_if_intact(path: Path, digest: str) -> bool:
    try:
        if _has_digest(path, digest):
            return True
    except FileNotFoundError:
        return False
    except OSError:
        pass  # unreadable: not servable either
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
    return False


def _has_digest(path: Path, digest: str) -> bool:
    algorithm, _, expected = digest.partition(":")
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest() == expected
