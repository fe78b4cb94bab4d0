"""Fills under way share the blob cache's budget (gateway/blobcache/store.py): cold reads of
many large blobs at once, each within ``max_bytes`` on its own, never write more than
``max_bytes`` between them; a fill that does not fit beside the others is relayed (its
bytes still hashed) and not kept."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from gateway.blobcache import BlobCache

MAX_BYTES = 100_000
BLOBS = [os.urandom(60_000) for _ in range(3)]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _spooled(root: Path) -> int:
    return sum(path.stat().st_size for path in (root / "tmp").iterdir())


@pytest.mark.parametrize("announced", [True, False], ids=["size-known", "size-unknown"])
async def test_concurrent_fills_stay_within_max_bytes(tmp_path: Path, announced: bool) -> None:
    root = tmp_path / "cache"
    cache = BlobCache(root, MAX_BYTES)
    fills = []
    for blob in BLOBS:
        fill = cache.claim(_digest(blob))
        assert fill is not None
        await fill.start(len(blob) if announced else None)
        fills.append(fill)
    for fill, blob in zip(fills, BLOBS, strict=True):
        for start in range(0, len(blob), 10_000):
            await fill.write(blob[start:start + 10_000])
            assert _spooled(root) <= MAX_BYTES
    # Each read is complete and verified, kept or not; what is kept fits.
    assert [await fill.commit() for fill in fills] == [True] * len(BLOBS)
    assert _digest(BLOBS[0]) in cache
    assert cache.total <= MAX_BYTES
    kept = sum((root / "sha256").joinpath(p.name).stat().st_size
               for p in (root / "sha256").iterdir())
    assert kept <= MAX_BYTES
