"""A bounded, content-addressed store of blobs uploaded through this gateway.

ECR only hands out download URLs for layers that some image references, yet clients read a
blob back right after uploading it (and the OCI conformance workflow does). Every upload is
spooled here as it streams to ECR; once ECR has verified the digest, the spool becomes
``blobs/sha256/<hex>`` and can be served until an image references it (then ECR serves it)
or until the least recently used entries are evicted to stay under ``max_bytes``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


class StagingStore:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self._spools = root / "spool"
        self._blobs = root / "blobs" / "sha256"
        self._spools.mkdir(parents=True, exist_ok=True)
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._max_bytes = max_bytes
        self.empty = root / "empty"
        self.empty.touch()
        for leftover in self._spools.iterdir():
            leftover.unlink(missing_ok=True)  # spools of a previous run are unverified

    def spool_path(self, upload_id: str) -> Path:
        return self._spools / upload_id

    def append(self, upload_id: str, received_before: int, data: bytes | memoryview) -> None:
        """Append to an upload's spool if it holds exactly the bytes received so far.

        A spool that fell behind (its earlier bytes went to another replica, or a write
        failed) is dropped for good: the blob is then simply not staged.
        """
        path = self.spool_path(upload_id)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            if received_before != 0:
                return
            size = 0
        if size != received_before:
            path.unlink(missing_ok=True)
            return
        with open(path, "ab") as handle:
            handle.write(data)

    def promote(self, upload_id: str, digest: str, size: int) -> None:
        """Keep a finished spool under its (upstream-verified) digest."""
        path = self.spool_path(upload_id)
        try:
            if path.stat().st_size != size:
                path.unlink(missing_ok=True)
                return
        except FileNotFoundError:
            return
        os.replace(path, self.blob_path(digest))
        self._evict()

    def discard(self, upload_id: str) -> None:
        self.spool_path(upload_id).unlink(missing_ok=True)

    def blob_path(self, digest: str) -> Path:
        return self._blobs / digest.split(":", 1)[1]

    def find(self, digest: str) -> Path | None:
        if not digest.startswith("sha256:"):
            return None
        path = self.blob_path(digest)
        try:
            os.utime(path, (time.time(), path.stat().st_mtime))  # atime: LRU order
        except FileNotFoundError:
            return None
        return path

    def forget(self, digest: str) -> None:
        """Drop a blob ECR can now serve itself."""
        if digest.startswith("sha256:"):
            self.blob_path(digest).unlink(missing_ok=True)

    def _evict(self) -> None:
        entries = []
        for entry in os.scandir(self._blobs):
            stat = entry.stat()
            entries.append((stat.st_atime, stat.st_size, entry.path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self._max_bytes:
                break
            Path(path).unlink(missing_ok=True)
            total -= size
