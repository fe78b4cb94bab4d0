"""The staging copy written past the page cache, and the machines where that is the default."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from gateway.app import _direct_io
from gateway.disk.direct_io import ALIGN, DirectWriter, balloon_reports_free_pages, write_direct
from gateway.ecr.staging import StagingStore
from tests.support.pagecache import resident_pages

MiB = 1024 * 1024
U1, U2 = "1" * 32, "2" * 32  # upload session ids (spool names)


def _balloon(root: Path, features: str) -> Path:
    device = root / "bus" / "virtio" / "drivers" / "virtio_balloon" / "virtio3"
    device.mkdir(parents=True)
    (device / "features").write_text(features + "\n")
    return root


def test_a_balloon_that_reports_free_pages_is_recognised(tmp_path: Path) -> None:
    # Bits 1, 2 and 5 (stats, deflate on OOM, free page reporting), as Firecracker offers.
    assert balloon_reports_free_pages(_balloon(tmp_path / "a", "0110010100000000"))
    # The same balloon without free page reporting, and a machine with no balloon at all.
    assert not balloon_reports_free_pages(_balloon(tmp_path / "b", "0110000100000000"))
    assert not balloon_reports_free_pages(tmp_path / "c")


def test_the_setting_overrides_the_machine() -> None:
    assert _direct_io("always") is True
    assert _direct_io("never") is False
    assert _direct_io("auto") is balloon_reports_free_pages()


def test_a_direct_write_holds_every_byte_and_leaves_the_page_cache_alone(
        tmp_path: Path) -> None:
    pieces = [os.urandom(n) for n in (3 * MiB + 17, 5, MiB - 22, 2 * MiB, 4096 + 100)]
    path = tmp_path / "spool"
    path.write_bytes(b"x" * (2 * ALIGN))  # a spool that already holds two blocks
    assert write_direct(path, 2 * ALIGN, pieces)
    data = path.read_bytes()
    assert data == b"x" * (2 * ALIGN) + b"".join(pieces)
    fresh = tmp_path / "fresh"
    assert write_direct(fresh, 0, pieces)
    # Only the unaligned end went through the page cache: one block, not 6 MiB of pages.
    assert resident_pages(fresh) <= 2, "the staged bytes went through the page cache"
    assert fresh.read_bytes() == b"".join(pieces)


def test_an_unaligned_start_is_left_to_the_page_cache(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    assert not write_direct(path, 100, [b"abc"])
    assert not path.exists()


@pytest.mark.parametrize("direct", [True, False])
def test_a_spool_written_in_any_shape_is_promoted_whole(tmp_path: Path, direct: bool) -> None:
    store = StagingStore(tmp_path / "staging", 1 << 30, direct=direct)
    chunks = [os.urandom(n) for n in (10 * MiB, 10 * MiB, 333, 7 * MiB + 5, 4096, 1)]
    received = 0
    for chunk in chunks:  # aligned starts, then an odd one: the page cache from there on
        store.append(U1, received, [memoryview(chunk)])
        received += len(chunk)
    whole = b"".join(chunks)
    assert store.spool_range(U1, received - 4097, received) == whole[-4097:]
    digest = "sha256:" + hashlib.sha256(whole).hexdigest()
    assert store.spool_digest(U1, received) == digest
    store.promote(U1, digest, received, chunks[-1])
    assert store.blob_path(digest).read_bytes() == whole


def test_a_staged_push_does_not_fill_the_page_cache(tmp_path: Path) -> None:
    """Against the page cache's default: 20 MiB staged leave (nearly) nothing cached."""
    chunks = [os.urandom(10 * MiB), os.urandom(10 * MiB)]
    for direct, limit in ((True, 16), (False, None)):
        store = StagingStore(tmp_path / f"staging-{direct}", 1 << 30, direct=direct)
        store.append(U2, 0, [memoryview(chunks[0])])
        store.append(U2, 10 * MiB, [memoryview(chunks[1])])
        resident = resident_pages(store.spool_path(U2))
        if limit is not None:
            assert resident <= limit
        else:
            assert resident > 4000  # the same bytes through the page cache stay cached


def test_blocks_go_through_the_page_cache_while_the_writer_lags(tmp_path: Path) -> None:
    """A writer behind what it must keep up with (a disk slower than the upstream) writes
    whole buffers through the page cache until it has caught up; the file stays whole and
    the direct writes after those blocks stay aligned."""
    path = tmp_path / "spool"
    lags = iter([False, True, True, False, True, False, False])
    pieces = [os.urandom(n) for n in (MiB + 5, 3 * MiB, 333, 2 * MiB - 338 + 17)]
    with open(path, "wb") as plain:
        direct = os.open(path, os.O_WRONLY | os.O_DIRECT)
        try:
            writer = DirectWriter(direct, 0, buffered=plain.fileno(),
                                  lagging=lambda: next(lags))
            for piece in pieces:
                writer.write(piece)
            writer.finish()
        finally:
            os.close(direct)
    whole = b"".join(pieces)
    assert writer.written == len(whole) == 6 * MiB + 17
    # Buffers 2, 3 and 5 of 6 through the page cache, and the 17 bytes of the end.
    assert writer.cached == 3 * MiB + 17
    assert 3 * MiB // ALIGN <= resident_pages(path) <= 3 * MiB // ALIGN + 1
    assert path.read_bytes() == whole
