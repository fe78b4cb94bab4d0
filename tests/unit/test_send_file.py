"""Serving a blob from an open local file (gateway/oci/files.py): by sendfile to a client
elsewhere, through a small buffer to a client on this host (by sendfile too once it falls
behind), read past the page cache with ``direct``; each way the whole blob, a range of it,
and a cut transfer when the file is shorter than the blob."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.disk.direct_io import read_cached, write_direct
from gateway.oci import files
from tests.support.pagecache import resident_pages

MiB = 1024 * 1024
DATA = os.urandom(3 * MiB + 17)  # not a whole number of the buffer's pieces


class _Transport(asyncio.BaseTransport):
    def __init__(self, peer: Any) -> None:
        super().__init__()
        self._peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._peer if name == "peername" else default


@pytest.mark.parametrize(("peer", "local"), [
    (("127.0.0.1", 5000), True), (("127.3.4.5", 5000), True), (("::1", 5000, 0, 0), True),
    ("", True), (("10.0.0.7", 5000), False), (("2001:db8::1", 5000, 0, 0), False),
    (("fe80::1%eth0", 5000, 0, 2), False), (("not an address", 1), False)])
def test_which_clients_are_on_this_host(peer: Any, local: bool) -> None:
    assert files._on_this_host(_Transport(peer)) is local


async def _client(tmp_path: Path, size: int,
                  direct: bool) -> TestClient[web.Request, web.Application]:
    path = tmp_path / "blob"
    assert write_direct(path, 0, [DATA])  # on the disk, not in the page cache

    async def handler(request: web.Request) -> web.StreamResponse:
        return await files.send_file(request, open(path, "rb"), size,
                                     {"Content-Type": "application/octet-stream"},
                                     direct=direct)

    app = web.Application()
    app.router.add_get("/", handler)
    return TestClient(TestServer(app, host="127.0.0.1"))


@pytest.fixture(params=["this host", "elsewhere", "direct"])
def direct(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether the file is read past the page cache (for a client elsewhere, too)."""
    monkeypatch.setattr(files, "_on_this_host", lambda transport: request.param == "this host")
    return bool(request.param == "direct")


async def test_the_whole_blob_and_a_range(tmp_path: Path, direct: bool) -> None:
    async with await _client(tmp_path, len(DATA), direct) as client:
        async with client.get("/") as answer:
            assert answer.status == 200
            assert await answer.read() == DATA
        async with client.get("/", headers={"Range": "bytes=1000-2999999"}) as answer:
            assert answer.status == 206
            assert answer.headers["Content-Range"] == f"bytes 1000-2999999/{len(DATA)}"
            assert await answer.read() == DATA[1000:3000000]
    if direct:  # at most the unaligned end's block came through the page cache
        assert resident_pages(tmp_path / "blob") <= 2


async def test_a_file_shorter_than_the_blob_is_a_cut_transfer(tmp_path: Path,
                                                              direct: bool) -> None:
    async with await _client(tmp_path, len(DATA) + 4096, direct) as client:
        async with client.get("/") as answer:
            assert answer.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await answer.read()



async def _answer(reader: asyncio.StreamReader, status: bytes) -> int:
    """Read one HTTP answer's head, which must start with ``status``; its Content-Length."""
    start = await reader.readexactly(len(status))
    assert start == status  # not bytes left in the connection by the answer before
    head = await reader.readuntil(b"\r\n\r\n")
    lengths = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    return int(lengths[0].split(b":", 1)[1])


async def test_a_head_request_gets_the_headers_and_no_body(tmp_path: Path,
                                                           direct: bool) -> None:
    """A body after a HEAD answer would stay in the connection: the next answer on it (a
    client's pooled connection) would start with blob bytes instead of a status line."""
    async with await _client(tmp_path, len(DATA), direct) as client:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        try:
            writer.write(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99\r\n\r\n")
            async with asyncio.timeout(10):
                assert await _answer(reader, b"HTTP/1.1 200 ") == len(DATA)
                assert await _answer(reader, b"HTTP/1.1 206 ") == 100
                assert await reader.readexactly(100) == DATA[:100]
        finally:
            writer.close()


async def _slow_read(host: str, port: int, range_header: str = "") -> tuple[bytes, bytes]:
    """GET / as a client that reads slower than the server sends (containerd hands each MiB
    to its content store before reading on): a small receive buffer, 64 KiB at a time, a
    pause after each. The answer's head and body."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: x\r\n{range_header}\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        body = bytearray()
        while len(body) < length:
            piece = await reader.read(min(64 * 1024, length - len(body)))
            assert piece, "the answer was cut"
            body += piece
            await asyncio.sleep(0.002)
        return head, bytes(body)
    finally:
        writer.close()


async def test_a_client_falling_behind_gets_the_rest_by_sendfile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client on this host that reads slower than the file is read: bytes wait in its
    socket long after they were copied, so copying them only costs CPU. After a few pieces
    the rest goes by sendfile, whole and from where the copies stopped (also in a range)."""
    data = os.urandom(24 * MiB + 4321)
    path = tmp_path / "blob"
    path.write_bytes(data)
    reads: list[int] = []

    def counted(fd: int, offset: int, count: int) -> bytes:
        reads.append(count)
        return read_cached(fd, offset, count)

    monkeypatch.setattr(files, "read_cached", counted)

    async def handler(request: web.Request) -> web.StreamResponse:
        return await files.send_file(request, open(path, "rb"), len(data),
                                     {"Content-Type": "application/octet-stream"})

    app = web.Application()
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        head, body = await _slow_read(client.host, client.port)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert body == data
        copied = len(reads)
        assert copied <= 12, f"{copied} of {len(data) // MiB + 1} pieces copied"
        head, body = await _slow_read(client.host, client.port,
                                      f"Range: bytes=1000-{len(data) - 1001}\r\n")
        assert head.startswith(b"HTTP/1.1 206 ")
        assert body == data[1000:-1000]
        assert len(reads) - copied <= 12
