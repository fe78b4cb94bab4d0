"""A round-robin HTTP load balancer for tests: each request goes to the next backend.

It runs its own event loop in a thread, so tests that block (subprocess clients such as
docker) can use it too. Bodies stream both ways; redirects are passed through, not followed.
``served`` lists (method, path, backend index) for every request.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "te", "upgrade",
        "proxy-connection", "trailer"}


class RoundRobin:
    def __init__(self, backends: list[str]) -> None:
        self.backends = [b.rstrip("/") for b in backends]
        self.served: list[tuple[str, str, int]] = []
        self.url = ""
        self._turn = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._thread: threading.Thread | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        index = next(self._turn) % len(self.backends)
        self.served.append((request.method, request.path, index))
        # A multidict: clients send some headers (Accept) several times, and all must pass.
        headers = CIMultiDict((k, v) for k, v in request.headers.items()
                              if k.lower() not in _HOP)
        body: Any = request.content.iter_chunked(1 << 16) if request.body_exists else None
        assert self._session is not None
        async with self._session.request(request.method, self.backends[index] + request.path_qs,
                                         headers=headers, data=body,
                                         allow_redirects=False) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP:
                    response.headers.add(key, value)
            await response.prepare(request)
            if request.method != "HEAD":
                async for chunk in upstream.content.iter_chunked(1 << 16):
                    await response.write(chunk)
            await response.write_eof()
            return response

    def start(self) -> RoundRobin:
        ready = threading.Event()

        async def serve() -> None:
            self._session = aiohttp.ClientSession(auto_decompress=False,
                                                  timeout=aiohttp.ClientTimeout(total=None))
            app = web.Application(client_max_size=0)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = self._runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}"
            ready.set()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the balancer did not start")
        return self

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def close() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=15)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop = None

    def __enter__(self) -> RoundRobin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
