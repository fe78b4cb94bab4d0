"""Appending with O_DIRECT (gateway/pullthrough/directwrite.py): full blocks go out aligned,
the tail through the page cache, and the file reads back exactly the bytes written, through
an ordinary descriptor, wherever direct I/O is refused too; the bytes written are reported in
order, and a failed write is raised."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest

from gateway.pullthrough import directwrite
from gateway.pullthrough.directwrite import DirectAppender

BLOCK = directwrite.BUFFER


def _pieces(total: int, size: int) -> list[bytes]:
    data = os.urandom(total)
    return [data[i:i + size] for i in range(0, total, size)]


def _append(fd: int, pieces: list[bytes]) -> tuple[DirectAppender, list[int]]:
    reported: list[int] = []
    appender = DirectAppender(fd, reported.append)
    for piece in pieces:
        appender.write(piece)
    appender.finish()
    return appender, reported


@pytest.mark.parametrize("piece", [BLOCK, 256 * 1024, 100_003])
def test_aligned_blocks_and_the_tail_read_back_exactly(tmp_path: Path, piece: int) -> None:
    pieces = _pieces(3 * BLOCK + 12_345, piece)
    with tempfile.TemporaryFile(dir=tmp_path) as spool:
        opened = DirectAppender(spool.fileno(), lambda _: None)
        direct = opened.direct
        opened.close()
        _, reported = _append(spool.fileno(), pieces)
        assert os.pread(spool.fileno(), 4 * BLOCK, 0) == b"".join(pieces)
    if direct:
        # Whole blocks reported in order (some together), and the tail last.
        assert reported[-1] == 3 * BLOCK + 12_345
        assert reported == sorted(set(reported))
        assert all(total % BLOCK == 0 for total in reported[:-1])


def test_direct_io_is_used_on_a_disk_file_system(tmp_path: Path) -> None:
    with tempfile.TemporaryFile(dir=tmp_path) as spool:
        appender = DirectAppender(spool.fileno(), lambda _: None)
        try:
            if os.uname().sysname == "Linux" and not _on_tmpfs(tmp_path):
                assert appender.direct
        finally:
            appender.close()


def test_where_direct_io_is_refused_every_byte_goes_through_the_page_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(directwrite, "_open_direct", lambda fd: None)  # as on tmpfs
    pieces = _pieces(2 * BLOCK + 7, 65_536)
    with tempfile.TemporaryFile(dir=tmp_path) as spool:
        appender, reported = _append(spool.fileno(), pieces)
        assert not appender.direct
        assert os.pread(spool.fileno(), 3 * BLOCK, 0) == b"".join(pieces)
    assert reported == [*range(65_536, 2 * BLOCK + 1, 65_536), 2 * BLOCK + 7]


def test_a_write_refused_after_opening_falls_back_to_the_page_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pwrite = directwrite._pwrite
    plain: list[int] = []

    def picky(fd: int, view: memoryview, offset: int) -> None:
        if fd != plain[0]:
            raise OSError(errno.EINVAL, "Invalid argument")
        pwrite(fd, view, offset)

    monkeypatch.setattr(directwrite, "_open_direct", lambda fd: os.dup(fd))
    monkeypatch.setattr(directwrite, "_pwrite", picky)
    pieces = _pieces(2 * BLOCK + 99, BLOCK // 2)
    with tempfile.TemporaryFile(dir=tmp_path) as spool:
        plain.append(spool.fileno())
        _, reported = _append(spool.fileno(), pieces)
        assert os.pread(spool.fileno(), 3 * BLOCK, 0) == b"".join(pieces)
    assert reported[-1] == 2 * BLOCK + 99


def test_a_failed_block_is_raised_and_nothing_after_it_is_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pwrite = directwrite._pwrite

    def full_after_one_block(fd: int, view: memoryview, offset: int) -> None:
        if offset >= BLOCK:
            raise OSError(errno.ENOSPC, "No space left on device")
        pwrite(fd, view, offset)

    monkeypatch.setattr(directwrite, "_open_direct", lambda fd: os.dup(fd))
    monkeypatch.setattr(directwrite, "_pwrite", full_after_one_block)
    reported: list[int] = []
    with tempfile.TemporaryFile(dir=tmp_path) as spool:
        appender = DirectAppender(spool.fileno(), reported.append)
        for piece in _pieces(4 * BLOCK, BLOCK):
            appender.write(piece)
        with pytest.raises(OSError, match="No space left"):
            appender.finish()
    assert reported in ([], [BLOCK])


def _on_tmpfs(path: Path) -> bool:
    best = ""
    kind = ""
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, fs, *_ = line.split()
        if str(path.resolve()).startswith(mount) and len(mount) > len(best):
            best, kind = mount, fs
    return kind == "tmpfs"
