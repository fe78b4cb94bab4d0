"""The emulator's layer downloads (ecr_emulator/downloads.py): by sendfile to a client
elsewhere, in reads to a client on this host; the whole file and ranges either way."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ecr_emulator import downloads

DATA = os.urandom(1024 * 1024 + 3)


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

    async def handler(request: web.Request) -> web.StreamResponse:
        return downloads._LayerFile(path, {})

    app = web.Application()
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        async with client.get("/") as answer:
            assert (answer.status, await answer.read()) == (200, DATA)
        async with client.get("/", headers={"Range": "bytes=5-300000"}) as answer:
            assert (answer.status, await answer.read()) == (206, DATA[5:300001])
    assert used == [local, local]


@pytest.mark.parametrize(("peer", "local"), [
    (("127.0.0.1", 1), True), (("::1", 1, 0, 0), True), ("", True),
    (("192.0.2.1", 1), False), (("fe80::1%eth0", 1, 0, 2), False)])
def test_which_clients_are_on_this_host(peer: Any, local: bool) -> None:
    class Transport:
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return peer

    assert downloads._on_this_host(Transport()) is local  # type: ignore[arg-type]
