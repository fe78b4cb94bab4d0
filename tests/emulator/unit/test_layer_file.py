"""The emulator's layer downloads (ecr_emulator/downloads.py): by sendfile to a client
elsewhere, in direct reads to a client on this host; the whole file and ranges either way."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ecr_emulator import downloads
from ecr_emulator.direct_reads import read_direct
from tests.support.pagecache import resident_pages

DATA = os.urandom(1024 * 1024 + 3)


@contextlib.asynccontextmanager
async def _serving(path: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A client of a server that answers ``GET /`` with the layer file at ``path``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return downloads._LayerFile(path, {})

    app = web.Application()
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


@pytest.mark.parametrize("local", [True, False], ids=["this host", "elsewhere"])
async def test_whole_and_ranged_reads(tmp_path: Path, local: bool,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "layer"
    path.write_bytes(DATA)
    used: list[bool] = []

    def on_this_host(transport: Any) -> bool:
        used.append(local)
        return local

    monkeypatch.setattr(downloads, "_on_this_host", on_this_host)
    async with _serving(path) as client:
        async with client.get("/") as answer:
            assert (answer.status, await answer.read()) == (200, DATA)
        async with client.get("/", headers={"Range": "bytes=5-300000"}) as answer:
            assert (answer.status, await answer.read()) == (206, DATA[5:300001])
        # Across a block boundary, and across the end of the whole blocks.
        async with client.get("/", headers={"Range": "bytes=4095-1048578"}) as answer:
            assert (answer.status, await answer.read()) == (206, DATA[4095:1048579])
        async with client.get("/", headers={"Range": "bytes=1048575-"}) as answer:
            assert (answer.status, await answer.read()) == (206, DATA[1048575:])
    assert used == [local] * 4


async def test_a_download_to_this_host_leaves_the_page_cache_alone(tmp_path: Path) -> None:
    """The layer is read from the disk, not into page-cache pages first (on a VM that hands
    freed pages back to its host those cost more than the rest of the download)."""
    path = tmp_path / "layer"
    data = os.urandom(8 * 1024 * 1024 + 5)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    assert resident_pages(path) == 0
    async with _serving(path) as client:
        async with client.get("/") as answer:
            assert await answer.read() == data
    assert resident_pages(path) <= 1  # the last, partial block at most


def test_direct_reads_of_any_span(tmp_path: Path) -> None:
    path = tmp_path / "layer"
    path.write_bytes(DATA)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        for offset, count in ((0, 1), (1, 4096), (4095, 2), (1000, 1024 * 1024),
                              (len(DATA) - 2, 100), (len(DATA), 10)):
            assert read_direct(fd, offset, count) == DATA[offset:offset + count]
    finally:
        os.close(fd)


@pytest.mark.parametrize(("peer", "local"), [
    (("127.0.0.1", 1), True), (("::1", 1, 0, 0), True), ("", True),
    (("192.0.2.1", 1), False), (("fe80::1%eth0", 1, 0, 2), False)])
def test_which_clients_are_on_this_host(peer: Any, local: bool) -> None:
    class Transport:
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return peer

    assert downloads._on_this_host(Transport()) is local  # type: ignore[arg-type]
