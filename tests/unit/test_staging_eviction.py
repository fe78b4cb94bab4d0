"""The staging store's bound: the least recently read blobs go once it is exceeded, down to a
low-water mark, and the folder is looked at whole only when the store may be over its bound
or the last look is old (a store of many small blobs is not scanned on every promote)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from gateway.ecr.staging import _LOOK_AGAIN_SECONDS, _LOW_WATER, StagingStore

BLOB = 1000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountedStore(StagingStore):
    """The store, counting its looks at the whole folder."""

    looks = 0

    def _evict(self) -> int:
        self.looks += 1
        return super()._evict()


def stage(store: StagingStore, index: int, read_at: float | None = None) -> Path:
    """Upload ``index``'s blob through a spool, promote it; ``read_at``: its last read."""
    data = index.to_bytes(4, "big") * (BLOB // 4)
    upload = f"{index:032x}"
    store.append(upload, 0, data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store.promote(upload, digest, len(data))
    store.discard(upload)
    path = store.blob_path(digest)
    if read_at is not None:
        os.utime(path, (read_at, read_at))
    return path


def staged(root: Path) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(root / "blobs" / "sha256"))


def test_a_store_with_room_is_looked_at_once_not_on_every_promote(tmp_path: Path) -> None:
    store = CountedStore(tmp_path, max_bytes=1000 * BLOB, clock=Clock())
    for index in range(300):
        stage(store, index)
    assert staged(tmp_path) == 300 * BLOB
    assert store.looks == 1  # the first promote's: the process had no count yet


def test_over_its_bound_the_least_recently_read_go_down_to_the_low_water_mark(
        tmp_path: Path) -> None:
    store = CountedStore(tmp_path, max_bytes=20 * BLOB, clock=Clock())
    paths = [stage(store, index, read_at=1_000_000 + index) for index in range(20)]
    assert staged(tmp_path) == 20 * BLOB
    newest = stage(store, 20, read_at=2_000_000)
    assert staged(tmp_path) <= 20 * BLOB * _LOW_WATER
    gone = [path for path in paths if not path.exists()]
    assert gone == paths[:len(gone)] and len(gone) == 3  # the oldest reads, in order
    assert newest.exists()
    looks = store.looks
    stage(store, 21)  # room again below the mark: no look
    assert store.looks == looks


def test_blobs_another_process_staged_are_counted_at_the_next_look(tmp_path: Path) -> None:
    clock = Clock()
    store = CountedStore(tmp_path, max_bytes=20 * BLOB, clock=clock)
    stage(store, 0, read_at=1_000_000)
    other = CountedStore(tmp_path, max_bytes=20 * BLOB, clock=clock)
    for index in range(1, 20):  # another process fills the shared folder to its bound
        stage(other, index, read_at=1_000_000 + index)
    stage(store, 20, read_at=2_000_000)
    clock.now += _LOOK_AGAIN_SECONDS
    stage(store, 21, read_at=2_000_001)
    assert staged(tmp_path) <= 20 * BLOB * _LOW_WATER
    assert not store.blob_path(
        "sha256:" + hashlib.sha256((0).to_bytes(4, "big") * (BLOB // 4)).hexdigest()).exists()
