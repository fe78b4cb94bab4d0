"""Blobs handed to the blob cache already verified (gateway/blobcache/store.py, ``adopt``):
admitted as they are, within the budget, and counted once when a read's own fill of the same
blob ends too."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path

from gateway.blobcache import BlobCache

DATA = b"layer bytes " * 10_000
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def _source(tmp_path: Path) -> Path:
    source = tmp_path / "verified"
    source.write_bytes(DATA)
    return source


async def test_an_adopted_blob_is_served_without_hashing_it_again(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache", 10 * len(DATA))
    source = _source(tmp_path)
    assert await cache.adopt(DIGEST, len(DATA), lambda path: shutil.copyfile(source, path))
    assert DIGEST in cache and cache.total == len(DATA)
    cache._verify = None  # type: ignore[assignment, method-assign]  # must not be called
    blob = await cache.open(DIGEST)
    assert blob is not None and blob.size == len(DATA)
    assert blob.file.read() == DATA
    blob.file.close()
    assert [p.name for p in (tmp_path / "cache" / "tmp").iterdir()] == []


async def test_a_blob_larger_than_the_cache_is_not_adopted(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache", len(DATA) - 1)
    placed: list[Path] = []
    assert not await cache.adopt(DIGEST, len(DATA), placed.append)
    assert placed == [] and DIGEST not in cache


async def test_an_adoption_that_fails_leaves_nothing(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache", 10 * len(DATA))

    def broken(path: Path) -> None:
        path.write_bytes(DATA[:10])
        raise OSError(28, "No space left on device")

    assert not await cache.adopt(DIGEST, len(DATA), broken)
    assert DIGEST not in cache and cache.total == 0
    await cache.wait_fill(DIGEST)
    for _ in range(100):  # the partial file is unlinked in a worker
        if not any((tmp_path / "cache" / "tmp").iterdir()):
            break
        await asyncio.sleep(0.01)
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


async def test_a_fill_ending_after_an_adoption_counts_the_blob_once(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache", 10 * len(DATA))
    fill = cache.claim(DIGEST)
    assert fill is not None
    await fill.start(len(DATA))
    await fill.write(DATA)
    source = _source(tmp_path)
    assert await cache.adopt(DIGEST, len(DATA), lambda path: shutil.copyfile(source, path))
    assert await fill.commit()
    assert cache.total == len(DATA)
    assert [p.name for p in (tmp_path / "cache" / "sha256").iterdir()] == [DIGEST[7:]]


async def test_a_copy_written_past_the_page_cache_is_read_the_same_way(tmp_path: Path) -> None:
    """Only a copy its adopter wrote past the page cache is read past it; after a start the
    copy is verified through the page cache, and is then read from there."""
    cache = BlobCache(tmp_path / "cache", 10 * len(DATA))
    source = _source(tmp_path)
    assert await cache.adopt(DIGEST, len(DATA), lambda path: shutil.copyfile(source, path),
                             on_disk=True)
    blob = await cache.open(DIGEST)
    assert blob is not None and blob.on_disk
    blob.file.close()
    restarted = BlobCache(tmp_path / "cache", 10 * len(DATA))
    blob = await restarted.open(DIGEST)
    assert blob is not None and not blob.on_disk
    blob.file.close()
    other = BlobCache(tmp_path / "other", 10 * len(DATA))
    assert await other.adopt(DIGEST, len(DATA), lambda path: shutil.copyfile(source, path))
    blob = await other.open(DIGEST)
    assert blob is not None and not blob.on_disk
    blob.file.close()
