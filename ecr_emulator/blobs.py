"""Files on disk: content-addressed blobs and one data file per in-progress upload.

``blobs/sha256/ab/abcd…`` holds a layer's bytes once, whichever repositories have it.
``uploads/<uploadId>`` receives the parts of an upload in place; each part is fsynced before
the database accepts it, so the file's first ``received`` bytes are always valid. Completing
an upload hard-links the (already durable) upload file under its digest — the atomic publish
step of write-fsync-rename — and only then commits the layer; the upload file is unlinked
last, so a crash at any point leaves either a resumable upload or a finished layer.

A part is appended by a PartWriter (parts.py) as its bytes arrive, so each byte reaches the
disk once and is never read back to publish or hash the layer.

Every method here blocks (write, fsync, hashing): callers run them with ``asyncio.to_thread``,
but for PartWriter.write of pieces of a request body (a page-cache write of ≤ 1 MiB) and
PartWriter.rollback (an ftruncate).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ecr_emulator.parts import PartWriter
from ecr_model.durable_files import fsync_dir, make_dirs

CHUNK = 1024 * 1024


class BlobStore:
    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.durable = durable
        self.blob_root = root / "blobs"
        self.upload_root = root / "uploads"
        self._make_dir(self.blob_root)
        self._make_dir(self.upload_root)

    def _fsync(self, fd: int) -> None:
        if self.durable:  # else left to the kernel (see Settings.durable)
            os.fsync(fd)

    def _make_dir(self, path: Path) -> None:
        """A folder (and its missing parents) whose name outlives a power cut when durable."""
        if self.durable:
            make_dirs(path)
        else:
            path.mkdir(parents=True, exist_ok=True)

    def _fsync_dir(self, path: Path) -> None:
        if self.durable:
            fsync_dir(path)

    def blob_path(self, digest: str) -> Path:
        algorithm, _, encoded = digest.partition(":")
        return self.blob_root / algorithm / encoded[:2] / encoded

    def upload_path(self, upload_id: str) -> Path:
        return self.upload_root / upload_id

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def write_part(self, upload_id: str, offset: int, data: bytes | bytearray | memoryview,
                   hasher: Any | None) -> None:
        """Write ``data`` at ``offset`` (dropping anything after it) and make it durable."""
        writer = self.part_writer(upload_id, offset, hasher)
        try:
            writer.write(data)
            writer.commit()
        except BaseException:
            writer.rollback()
            raise

    def part_writer(self, upload_id: str, offset: int, hasher: Any | None) -> PartWriter:
        """A part about to be appended at ``offset`` of the upload's file."""
        # The first part names the file durably: a first attempt that was refused or cut
        # off may have created it already, and its name was never synced then.
        return PartWriter(self.upload_path(upload_id), offset, hasher, durable=self.durable,
                          on_commit=(lambda: self._fsync_dir(self.upload_root)) if offset == 0
                          else None)

    def hash_upload(self, upload_id: str, length: int) -> str:
        """The sha256 digest of the upload's first ``length`` bytes, read in chunks."""
        hasher = hashlib.sha256()
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        remaining = length
        with open(self.upload_path(upload_id), "rb", buffering=0) as f:
            while remaining > 0:
                n = f.readinto(view[:min(CHUNK, remaining)])
                if not n:
                    raise OSError(f"upload {upload_id} is shorter than {length} bytes")
                hasher.update(view[:n])
                remaining -= n
        return f"sha256:{hasher.hexdigest()}"

    def publish(self, upload_id: str, digest: str, length: int) -> None:
        """Make the upload's bytes the blob ``digest`` (a no-op if the blob exists)."""
        target = self.blob_path(digest)
        if target.is_file():
            return
        source = self.upload_path(upload_id)
        if source.stat().st_size != length:  # a part written but never accepted
            with open(source, "r+b") as f:
                f.truncate(length)
                self._fsync(f.fileno())
        self._make_dir(target.parent)  # a new blobs/sha256/ab folder: its name durable too
        try:
            os.link(source, target)
        except FileExistsError:
            return  # published by a concurrent upload of the same bytes
        self._fsync_dir(target.parent)

    def discard_upload(self, upload_id: str) -> None:
        self.upload_path(upload_id).unlink(missing_ok=True)

    def remove_blob(self, digest: str) -> None:
        self.blob_path(digest).unlink(missing_ok=True)

    def upload_size(self, upload_id: str) -> int | None:
        try:
            return self.upload_path(upload_id).stat().st_size
        except FileNotFoundError:
            return None

    def truncate_upload(self, upload_id: str, length: int) -> None:
        os.truncate(self.upload_path(upload_id), length)

    def upload_ids(self) -> Iterator[str]:
        for path in self.upload_root.iterdir():
            if path.is_file():
                yield path.name

    def blob_digests(self) -> Iterator[str]:
        for algorithm in self.blob_root.iterdir():
            for prefix in algorithm.iterdir():
                for path in prefix.iterdir():
                    yield f"{algorithm.name}:{path.name}"
