"""Loopback servers for attacker tests: a small HTTP server that answers every request with
the handler it is given (a hostile upstream, a host that should never be asked) and records
what it was sent, a handler that passes requests on to ECR and holds some of its answers, a
raw TCP listener that counts the connections made to it, and one that also passes them on
to a real server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def challenging(realm: str) -> Handler:
    """An upstream answering every request 401 with ``realm`` as its ``WWW-Authenticate``
    challenge (a token realm it chose)."""

    async def challenge(request: web.Request) -> web.StreamResponse:
        return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401,
                                 headers={"WWW-Authenticate": realm})

    return challenge


class Server:
    def __init__(self, handler: Handler, client_max_size: int = 1024 ** 2) -> None:
        self.handler = handler
        self.client_max_size = client_max_size  # the largest request body it reads
        self.seen: list[tuple[str, str | None]] = []  # (path, Authorization)
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.path, request.headers.get("Authorization")))
        return await self.handler(request)

    async def __aenter__(self) -> Server:
        app = web.Application(client_max_size=self.client_max_size)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def as_localhost(self) -> str:
        """The same server under another host name."""
        return self.url.replace("127.0.0.1", "localhost")


class LateAnswers:
    """A forwarding hop (a :class:`Server` handler) between a gateway and ECR that holds
    ECR's answers to ``action`` for ``hold`` seconds once ECR gave them: the gateway's read
    was answered before a change made meanwhile (another replica's, or its own), and reaches
    it after that change."""

    def __init__(self, upstream: str, action: str = "BatchGetImage") -> None:
        self.upstream = upstream
        self.action = action
        self.hold = 0.0
        self.answered = 0  # answers to ``action`` ECR gave (held or not)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        async with aiohttp.ClientSession(auto_decompress=False) as client, client.request(
                request.method, self.upstream + request.path_qs, data=await request.read(),
                headers=request.headers) as answer:  # the same Host: the signature holds
            body = await answer.read()
            if request.headers.get("X-Amz-Target", "").endswith(f".{self.action}"):
                self.answered += 1
                await asyncio.sleep(self.hold)
            return web.Response(status=answer.status, body=body, headers={
                k: v for k, v in answer.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")})


class Listener:
    """A TCP port on ``host`` that counts the connections made to it, whatever is said on
    them (http, or a TLS handshake it cannot answer). With ``answer`` it reads the request
    and writes those bytes back before closing (an internal service's reply); without, it
    closes at once."""

    def __init__(self, host: str = "127.0.0.1", answer: bytes | None = None) -> None:
        self.host = host
        self.answer = answer
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.answer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.read(65536), 5)
                writer.write(self.answer)
                await writer.drain()
        writer.close()

    async def __aenter__(self) -> Listener:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


class Forwarder(Listener):
    """A Listener that passes each connection on to ``target`` (host, port) both ways: an
    upstream whose connections are counted."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__()
        self.target = target

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            far_reader, far_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, far_writer), pipe(far_reader, writer))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
