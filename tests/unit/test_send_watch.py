"""SendWatch (gateway/oci/sending.py): an answer whose unsent bytes make no progress for its
idle time is cut, its handler cancelled where it waits and its cleanup run; time spent with
nothing unsent (waiting on storage) and a slow reader that keeps reading are not cut."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from gateway.oci.files import send_file
from gateway.oci.sending import SendWatch

MiB = 1024 * 1024
IDLE = 0.5

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Seen:
    def __init__(self) -> None:
        self.cut: bool | None = None
        self.cleaned = asyncio.Event()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> int:
        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return int(runner.addresses[0][1])

    yield start
    for runner in runners:
        await runner.cleanup()


def _ask(port: int, window: int | None = None) -> socket.socket:
    sock = socket.socket()
    if window is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
    sock.setblocking(False)
    return sock


async def _read_all(sock: socket.socket, pause: float = 0.0, step: int = 1 << 20) -> bytes:
    loop = asyncio.get_running_loop()
    got = bytearray()
    while chunk := await loop.sock_recv(sock, step):
        got += chunk
        if pause:
            await asyncio.sleep(pause)
    sock.close()
    return bytes(got.partition(b"\r\n\r\n")[2])


def _watched(seen: _Seen, body: Callable[[web.Request], Awaitable[web.StreamResponse]]
             ) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        watch = SendWatch(request, idle=IDLE)
        response: web.StreamResponse | None = None
        async with watch:
            try:
                response = await body(request)
            finally:
                seen.cleaned.set()
        seen.cut = watch.cut
        return response if response is not None else web.Response(status=499)

    return handler


async def test_a_reader_that_stops_is_cut_and_its_handler_cleans_up(
        serve: Callable[[Handler], Awaitable[int]]) -> None:
    seen = _Seen()

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(256):
            await response.write(b"\0" * MiB)
        return response

    port = await serve(_watched(seen, endless))
    holder = _ask(port, window=4096)
    started = time.monotonic()
    await asyncio.wait_for(seen.cleaned.wait(), 30)
    assert seen.cut is True or seen.cut is None  # set as the handler returns
    await asyncio.sleep(0.2)
    assert seen.cut is True
    assert time.monotonic() - started < 20
    body = await _read_all(holder)
    assert 0 < len(body) < 256 * MiB


async def test_a_file_sent_to_a_reader_that_stops_is_closed(
        serve: Callable[[Handler], Awaitable[int]], tmp_path: Path) -> None:
    """By sendfile once the client falls behind: cancelled where it waits, the file closed
    (the connection aborted alone would leave the sendfile waiting for ever)."""
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(64 * MiB))
    seen = _Seen()
    handles = []

    async def from_file(request: web.Request) -> web.StreamResponse:
        handle = open(path, "rb")  # send_file closes it
        handles.append(handle)
        return await send_file(request, handle, 64 * MiB, {})

    port = await serve(_watched(seen, from_file))
    holder = _ask(port, window=4096)
    await asyncio.wait_for(seen.cleaned.wait(), 30)
    for _ in range(100):
        if handles[0].closed:
            break
        await asyncio.sleep(0.1)
    assert handles[0].closed
    assert seen.cut is True
    holder.close()


async def test_waiting_on_storage_is_not_idle(
        serve: Callable[[Handler], Awaitable[int]]) -> None:
    """Nothing unsent while the handler waits: however long, no cut."""
    seen = _Seen()

    async def slow_storage(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(b"first last")
        await response.prepare(request)
        await response.write(b"first")
        await asyncio.sleep(IDLE * 5)
        await response.write(b" last")
        await response.write_eof()
        return response

    port = await serve(_watched(seen, slow_storage))
    assert await _read_all(_ask(port)) == b"first last"
    assert seen.cut is False


async def test_a_slow_reader_that_keeps_reading_is_not_cut(
        serve: Callable[[Handler], Awaitable[int]]) -> None:
    seen = _Seen()
    body = os.urandom(2 * MiB)

    async def whole(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(body)
        await response.prepare(request)
        for start in range(0, len(body), MiB):
            await response.write(body[start:start + MiB])
        await response.write_eof()
        return response

    port = await serve(_watched(seen, whole))
    # 64 KiB every 0.1 s: the 2 MiB take about 3 s, ten idle times, never one without progress.
    assert await _read_all(_ask(port, window=64 * 1024), pause=0.1, step=64 * 1024) == body
    assert seen.cut is False


async def test_an_answer_left_in_the_write_buffer_after_its_request_is_cut(
        serve: Callable[[Handler], Awaitable[int]]) -> None:
    """An answer's end (up to the buffer's high-water mark, 64 KiB) may still wait in the
    write buffer when its request is over: a connection that then does not move is cut too
    (closing it after the request would wait for those bytes for ever)."""
    seen = _Seen()
    left = []

    async def small(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        sock = request.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # the kernel takes little
        response = web.Response(body=b"x" * 40_000)
        await response.prepare(request)
        await response.write_eof()
        left.append(request.transport.get_write_buffer_size())
        return response

    port = await serve(_watched(seen, small))
    holder = _ask(port, window=4096)
    await asyncio.wait_for(seen.cleaned.wait(), 10)
    await asyncio.sleep(0.1)
    assert seen.cut is False and left[0] > 0, (seen.cut, left)
    await asyncio.sleep(IDLE * 4)  # not read: cut meanwhile
    loop = asyncio.get_running_loop()
    got = 0
    with contextlib.suppress(ConnectionResetError):
        while chunk := await asyncio.wait_for(loop.sock_recv(holder, 1 << 16), 10):
            got += len(chunk)
    holder.close()
    assert got < 40_000
