"""The pull-through tee (gateway/pullthrough/tee.py): readers that keep up take each chunk
from memory as it was received, those behind read the spool, memory ahead of the spool stays
bounded, and no reader gets the last byte before the digest matched (nor any when the spool
cannot be written)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.oci.errors import OciError
from gateway.pullthrough import spooler as spooler_module
from gateway.pullthrough import tee as tee_module
from gateway.pullthrough.tee import Tee
from tests.support.pagecache import resident_pages

CHUNKS = [bytes([i]) * (256 * 1024) for i in range(1, 9)]
DIGEST = "sha256:" + hashlib.sha256(b"".join(CHUNKS)).hexdigest()
SIZE = sum(map(len, CHUNKS))


async def _paced(chunks: list[bytes], gate: asyncio.Queue[None]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await gate.get()  # the next chunk only once the reader took the last one
        yield chunk


async def _follow(tee: Tee, gate: asyncio.Queue[None] | None) -> list[bytes]:
    got = []
    async for data in tee.reader(client=True):
        got.append(data)
        if gate is not None:
            gate.put_nowait(None)
    return got


@pytest.mark.parametrize("direct", [False, True])
async def test_a_reader_that_keeps_up_gets_the_chunks_received(tmp_path: Path,
                                                              direct: bool) -> None:
    tee = Tee(tmp_path, DIGEST, SIZE, direct=direct)
    gate: asyncio.Queue[None] = asyncio.Queue()
    gate.put_nowait(None)
    reader = asyncio.create_task(_follow(tee, gate))
    await asyncio.sleep(0)
    await tee.fill(_paced(CHUNKS, gate))
    got = await reader
    tee.close()
    assert b"".join(got) == b"".join(CHUNKS)
    # Every chunk but the last handed on as received: no copy, no read back from the spool.
    assert all(a is b for a, b in zip(got, CHUNKS[:-1], strict=False))


@pytest.mark.parametrize("size", [SIZE, None])
@pytest.mark.parametrize("direct", [False, True])
async def test_the_last_byte_waits_for_the_digest(tmp_path: Path, size: int | None,
                                                  direct: bool) -> None:
    wrong = [*CHUNKS[:-1], b"x" + CHUNKS[-1][1:]]
    assert await _read_failing(Tee(tmp_path, DIGEST, size, direct=direct), wrong) < SIZE


async def test_bytes_beyond_the_announced_size_wait_too(tmp_path: Path) -> None:
    tee = Tee(tmp_path, DIGEST, SIZE - 1)  # the upstream's Content-Length was short
    assert await _read_failing(tee, [*CHUNKS, b"tail"]) < SIZE - 1


async def _read_failing(tee: Tee, chunks: list[bytes]) -> int:
    """Fill ``tee`` with ``chunks`` that do not match its digest: the bytes a reader got."""
    got: list[bytes] = []

    async def read() -> None:
        async for data in tee.reader(client=True):
            got.append(data)

    reader = asyncio.create_task(read())
    with pytest.raises(OciError):
        await tee.fill(_unpaced(chunks))
    with pytest.raises(OciError):
        await reader
    tee.close()
    return sum(map(len, got))


async def _unpaced(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk


@pytest.mark.parametrize("direct", [False, True])
async def test_a_reader_a_few_pieces_behind_takes_them_from_memory(tmp_path: Path,
                                                                  direct: bool) -> None:
    tee = Tee(tmp_path, DIGEST, SIZE, direct=direct)
    await tee.fill(_unpaced(CHUNKS))  # 2 MiB, all of it within the latest kept in memory
    got = [data async for data in tee.reader(client=True)]
    tee.close()
    assert b"".join(got) == b"".join(CHUNKS)
    assert all(a is b for a, b in zip(got, CHUNKS, strict=True))


@pytest.mark.parametrize("direct", [False, True])
async def test_a_reader_that_falls_behind_reads_the_spool(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool) -> None:
    monkeypatch.setattr(tee_module, "_KEPT", 512 * 1024)
    tee = Tee(tmp_path, DIGEST, SIZE, direct=direct)
    await tee.fill(_unpaced(CHUNKS))
    got = [data async for data in tee.reader(client=True)]
    tee.close()
    assert b"".join(got) == b"".join(CHUNKS)
    # The first 1.5 MiB read back from the spool, the last two pieces from memory.
    assert b"".join(got[:-2]) == b"".join(CHUNKS[:-2])
    assert not any(data is chunk for data in got[:-2] for chunk in CHUNKS)
    assert got[-2] is CHUNKS[-2] and got[-1] is CHUNKS[-1]


async def test_memory_holds_a_bounded_amount_ahead_of_a_slow_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tee_module, "_UNSPOOLED_MAX", 512 * 1024)

    write_all = spooler_module._write_all

    def slow_write(fd: int, piece: bytes) -> None:
        time.sleep(0.02)
        write_all(fd, piece)

    monkeypatch.setattr(spooler_module, "_write_all", slow_write)
    tee = Tee(tmp_path, DIGEST, SIZE)
    ahead: list[int] = []

    async def watched() -> AsyncIterator[bytes]:
        async for chunk in _unpaced(CHUNKS):
            ahead.append(tee._received - tee._spooled)
            yield chunk

    await tee.fill(watched())
    tee.close()
    assert max(ahead) <= 512 * 1024 + len(CHUNKS[0])


async def test_a_failing_disk_fails_the_fill_and_its_readers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, piece: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spooler_module, "_write_all", full)
    assert await _read_failing(Tee(tmp_path, DIGEST, SIZE), CHUNKS) < SIZE
    # Said as what it is: this gateway's disk, not the upstream's transfer.
    tee = Tee(tmp_path, DIGEST, SIZE)
    with pytest.raises(OciError, match="could not keep its copy") as failed:
        await tee.fill(_unpaced(CHUNKS))
    assert failed.value.detail["reason"] == "No space left on device"
    tee.close()


async def _pieces(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


@pytest.mark.parametrize("direct", [False, True])
async def test_a_verified_spool_is_kept_by_a_link_not_a_copy(tmp_path: Path, direct: bool) -> None:
    tee = Tee(tmp_path, DIGEST, SIZE, direct=direct)
    with pytest.raises(RuntimeError):
        tee.keep_as(tmp_path / "early")  # nothing is kept before the digest matched
    await tee.fill(_pieces(CHUNKS))
    kept = tmp_path / "kept"
    tee.keep_as(kept)
    spool = os.fstat(tee._file.fileno())
    tee.close()
    assert kept.read_bytes() == b"".join(CHUNKS)
    assert kept.stat().st_ino == spool.st_ino  # the spool itself, given a name
    assert os.listdir(tmp_path) == ["kept"]  # the spool had none


async def test_a_spool_that_cannot_be_linked_is_copied(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another file system (or one without O_TMPFILE): the kernel copies the spool."""
    tee = Tee(tmp_path, DIGEST, SIZE)
    await tee.fill(_pieces(CHUNKS))

    def cross_device(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(tee_module.os, "link", cross_device)
    tee.keep_as(tmp_path / "kept")
    tee.close()
    assert (tmp_path / "kept").read_bytes() == b"".join(CHUNKS)


async def test_a_direct_spool_leaves_the_page_cache_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Written and read back past the page cache, in any piece sizes, with an unaligned end:
    every byte is there, and (nearly) none of them went through the page cache."""
    # Pieces come faster here than a disk takes them: the writer never counts as behind.
    monkeypatch.setattr(spooler_module, "_DIRECT_LAG_MAX", 1 << 40)
    chunks = [os.urandom(n) for n in (3 * 1024 * 1024 + 5, 777, 2 * 1024 * 1024, 4096 + 9)]
    whole = b"".join(chunks)
    tee = Tee(tmp_path, "sha256:" + hashlib.sha256(whole).hexdigest(), len(whole),
              direct=True)
    await tee.fill(_unpaced(chunks))
    tee._in_memory_pieces.clear()  # as a reader that starts late: all of it from the file
    got = b"".join([data async for data in tee.reader()])
    kept = tmp_path / "kept"
    tee.keep_as(kept)
    tee.close()
    assert got == whole
    # At most the unaligned end's block went through the page cache (counted before the
    # file is read here, which fills it).
    assert resident_pages(kept) <= 2, "the spool went through the page cache"
    assert kept.read_bytes() == whole


async def test_a_direct_spool_behind_the_upstream_goes_through_the_page_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk slower than the upstream (here: the writer always counts as behind) does not
    hold the upstream back: the blocks go through the page cache, every byte in place."""
    monkeypatch.setattr(spooler_module, "_DIRECT_LAG_MAX", -1)
    chunks = [os.urandom(n) for n in (3 * 1024 * 1024 + 5, 2 * 1024 * 1024, 4096 + 9)]
    whole = b"".join(chunks)
    tee = Tee(tmp_path, "sha256:" + hashlib.sha256(whole).hexdigest(), len(whole),
              direct=True)
    await tee.fill(_unpaced(chunks))
    kept = tmp_path / "kept"
    tee.keep_as(kept)
    tee.close()
    assert resident_pages(kept) >= 4 * 1024 * 1024 // 4096  # every full buffer
    assert kept.read_bytes() == whole
