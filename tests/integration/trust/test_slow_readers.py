"""Clients that ask for a blob and then read nothing (a tiny receive window, never read).

Every such client kept what its answer held for as long as it kept its connection open:
in proxy mode its ECR download connection (the gateway's HTTP client has 100: 110 such
clients left every other proxied read waiting for one) and about 3.6 MiB read ahead on it;
with the blob cache an open cache file each; in pull-through its hold on the spool file
(whose disk space outlived the spool budget) while ECR's copy of the blob waited 30 s for
it. Now an answer whose unsent bytes make no progress for
``limits.send_idle_timeout_seconds`` is cut, and what it held is given back; a client that
reads is served meanwhile, and a pull-through copy goes on into ECR.

The holders are plain sockets in this process (``SO_RCVBUF`` 4096, the request sent, nothing
read); what the gateway holds is read from /proc: its descriptors, and its established
connections to the holders, to the ECR emulator and to the upstream registry.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from tests.integration.trust.test_event_loop_stalls import CONFIG, LAYER, _largest_manifest
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.hostile import Server
from tests.support.oci import OCI_MANIFEST, OciClient, digest_of
from tests.support.processes import deleted_files, open_fds, tcp_connections

MiB = 1024 * 1024
BLOB = 32 * MiB
HOLDERS = 12
IDLE = 2.0  # limits.send_idle_timeout_seconds of the gateways below
RELEASED_WITHIN = 60.0  # seconds after the holders asked (unbounded before: never)


def _hold(url: str, count: int, headers: str = "") -> list[socket.socket]:
    """``count`` connections that ask for ``url`` (with ``headers``, lines ending in CRLF)
    and then read nothing."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    holders = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((parts.hostname, parts.port))
        sock.sendall(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     f"{headers}\r\n".encode())
        holders.append(sock)
    return holders


def _received(sock: socket.socket) -> tuple[int, int]:
    """(status, body bytes) of what a holder was sent before its connection ended."""
    sock.settimeout(30)
    got = b""
    try:
        while chunk := sock.recv(1 << 20):
            got += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    finally:
        sock.close()
    head, _, body = got.partition(b"\r\n\r\n")
    return int(head.split()[1]) if head else 0, len(body)


async def _read(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as reply:
        assert reply.status == 200, (reply.status, await reply.text())
        return await reply.read()


async def _attack(url: str, meanwhile: Callable[[], Awaitable[None]],
                  held: Callable[[list[int]], dict[str, int]], bound: dict[str, int],
                  before: object, headers: str = "") -> list[tuple[int, int]]:
    """HOLDERS clients ask for ``url`` and read nothing; ``meanwhile`` runs; then, within
    RELEASED_WITHIN, what the gateway holds (``held``, given the holders' ports) must come
    within ``bound``. What each holder was sent, as ``_received`` tells it."""
    holders = _hold(url, HOLDERS, headers)
    ports = [sock.getsockname()[1] for sock in holders]
    try:
        await meanwhile()
        deadline = time.monotonic() + RELEASED_WITHIN
        while not all((now := held(ports))[key] <= bound[key] for key in bound):
            assert time.monotonic() < deadline, \
                f"{RELEASED_WITHIN:.0f} s on, the gateway still holds {now} (before: {before})"
            await asyncio.sleep(0.5)
    except BaseException:
        for sock in holders:  # still held: nothing to read but a full window
            sock.close()
        raise
    return [_received(sock) for sock in holders]


async def _cuts(session: aiohttp.ClientSession, gateway: GatewayProcess,
                route: str = "end-2") -> float:
    async with session.get(f"{gateway.url}/metrics") as reply:
        text = await reply.text()
    match = re.search(rf'^ecr_gateway_send_cuts_total\{{route="{route}",timeout="idle"\}} (\S+)$',
                      text, re.MULTILINE)
    return float(match[1]) if match else 0.0


def _no_handler_errors(gateway: GatewayProcess) -> None:
    assert not [line for line in gateway.log_lines
                if "Traceback" in line or "Error handling request" in line], gateway.log_lines


@pytest.fixture(scope="module")
def proxy_gateway(upstream: EmulatorProcess,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {"blobs": {"mode": "proxy"}, "limits": {"send_idle_timeout_seconds": IDLE}}
    with GatewayProcess(tmp_path_factory.mktemp("proxy"), config,
                        upstream_url=upstream.url) as gw:
        yield gw


async def test_readers_that_stop_let_go_of_ecr_downloads(
        gateway: GatewayProcess, proxy_gateway: GatewayProcess, upstream: EmulatorProcess,
        repo: str, session: aiohttp.ClientSession) -> None:
    """12 clients ask a proxy-mode gateway for a 32 MiB layer and read nothing: each held an
    ECR download connection and its socket for as long as it liked (60 s on: 31 descriptors
    where there were 10, 12 connections to ECR where there were 2; 110 such clients took
    every connection of the gateway's HTTP client). Now each is cut after the idle timeout
    and its ECR connection closed; a client that reads gets the layer meanwhile."""
    layer = os.urandom(BLOB)
    await OciClient(session, gateway.url).push_image(repo, "v1", [layer])
    url = f"{proxy_gateway.url}/v2/{repo}/blobs/{digest_of(layer)}"
    assert await _read(session, url) == layer  # its download URL known, the pools set up
    assert proxy_gateway.process is not None
    pid, ecr_port = proxy_gateway.process.pid, urlsplit(upstream.url).port
    assert ecr_port is not None
    before = {"descriptors": open_fds(pid), "ecr": tcp_connections(pid, remote_ports=[ecr_port])}
    cuts_before = await _cuts(session, proxy_gateway)

    async def meanwhile() -> None:
        assert await _read(session, url) == layer  # a client that reads is served

    def held(ports: list[int]) -> dict[str, int]:
        return {"descriptors": open_fds(pid), "holders": tcp_connections(pid, remote_ports=ports),
                "ecr": tcp_connections(pid, remote_ports=[ecr_port])}

    # Held before: 12 holder sockets, 12 ECR downloads, for as long as they stayed.
    sent = await _attack(url, meanwhile, held, {
        "holders": 0, "ecr": before["ecr"] + 2, "descriptors": before["descriptors"] + 4}, before)
    # The attack held: every answer began, and was cut short.
    assert all(status == 200 and 0 < body < BLOB for status, body in sent), sent
    assert await _cuts(session, proxy_gateway) - cuts_before >= HOLDERS
    assert await proxy_gateway.logged(
        "made no progress within limits.send_idle_timeout_seconds")
    _no_handler_errors(proxy_gateway)


async def test_readers_that_stop_let_go_of_a_manifest(
        gateway: GatewayProcess, proxy_gateway: GatewayProcess, repo: str,
        session: aiohttp.ClientSession) -> None:
    """A manifest is answered whole from memory (up to 4 MiB): 12 clients that read none of
    the largest kept 12 copies in the gateway's write buffers, and their sockets, as long as
    they liked (60 s on: all 12 connections, 19 descriptors where there were 9). Now each
    is cut after the idle timeout, like any answer."""
    client = OciClient(session, gateway.url)
    for blob in (LAYER, CONFIG):
        await client.push_blob(repo, blob)
    body = _largest_manifest()
    async with session.put(client.url(f"/v2/{repo}/manifests/big"), data=body,
                           headers={"Content-Type": OCI_MANIFEST}) as reply:
        assert reply.status == 201, await reply.text()
    url = f"{proxy_gateway.url}/v2/{repo}/manifests/big"
    async with session.get(url, headers={"Accept": OCI_MANIFEST}) as reply:
        assert await reply.read() == body
    assert proxy_gateway.process is not None
    pid = proxy_gateway.process.pid
    before = open_fds(pid)
    cuts_before = await _cuts(session, proxy_gateway, "end-3")

    async def meanwhile() -> None:
        async with session.get(url, headers={"Accept": OCI_MANIFEST}) as reply:
            assert await reply.read() == body  # served

    def held(ports: list[int]) -> dict[str, int]:
        return {"descriptors": open_fds(pid), "holders": tcp_connections(pid, remote_ports=ports)}

    sent = await _attack(url, meanwhile, held, {"holders": 0, "descriptors": before + 4},
                         before, f"Accept: {OCI_MANIFEST}\r\n")
    assert all(status == 200 and 0 < size < len(body) for status, size in sent), sent
    assert await _cuts(session, proxy_gateway, "end-3") - cuts_before >= HOLDERS
    _no_handler_errors(proxy_gateway)


class _Upstream:
    """A registry holding two layers (``a`` and ``b``), each sent in 1 MiB writes a little
    apart (the copy is under way while clients follow it); counts its blob requests."""

    def __init__(self) -> None:
        self.layers = {name: os.urandom(BLOB) for name in "ab"}
        self.asked: list[str] = []

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        for name, layer in self.layers.items():
            if request.path.endswith(digest_of(layer)):
                self.asked.append(name)
                response = web.StreamResponse(headers={"Content-Length": str(len(layer))})
                await response.prepare(request)
                for start in range(0, len(layer), MiB):
                    await response.write(layer[start:start + MiB])
                    await asyncio.sleep(0.02)
                return response
        return web.Response(status=404)


@pytest.fixture
async def pulling_through(upstream: EmulatorProcess,
                          tmp_path: Path) -> AsyncIterator[tuple[_Upstream, GatewayProcess]]:
    registry = _Upstream()
    async with Server(registry) as source:
        config = {"mirrors": {"docker.io": {"repository_prefix": "docker-hub",
                                            "upstream": {"url": source.url}}},
                  "limits": {"send_idle_timeout_seconds": IDLE}}
        with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
            yield registry, gw


async def test_readers_that_stop_let_go_of_a_pull_through(
        pulling_through: tuple[_Upstream, GatewayProcess], upstream: EmulatorProcess,
        session: aiohttp.ClientSession) -> None:
    """12 clients ask for a layer the gateway pulls through and read nothing: each held its
    socket and a descriptor of the spool (the blob's disk space, after the spool budget let
    go of it: 60 s on, 12 spools and 31 descriptors where there were 10), and ECR's copy
    waited 30 s for them. Now they are cut after the idle timeout
    and let go of the spool; the upstream is read once, a client that reads gets the layer,
    and the copy goes on into ECR."""
    registry, gw = pulling_through
    assert gw.process is not None
    pid = gw.process.pid
    first, layer = registry.layers["a"], registry.layers["b"]
    # A copy before (the pools to ECR set up), then the one the holders ask for.
    done = len(upstream.requests("CompleteLayerUpload"))
    assert await _read(session, f"{gw.url}/v2/library/a/blobs/{digest_of(first)}?ns=docker.io") \
        == first
    await _copied(upstream, done + 1)
    before = {"descriptors": open_fds(pid), "spools": deleted_files(pid)}
    url = f"{gw.url}/v2/library/b/blobs/{digest_of(layer)}?ns=docker.io"

    started = time.monotonic()

    async def meanwhile() -> None:
        assert await _read(session, url) == layer  # a client that reads is served

    def held(ports: list[int]) -> dict[str, int]:
        return {"descriptors": open_fds(pid), "spools": deleted_files(pid),
                "holders": tcp_connections(pid, remote_ports=ports)}

    # Held before: 12 holder sockets and 12 descriptors of the spool, for as long as they
    # stayed (the copy into ECR went on after 30 s).
    sent = await _attack(url, meanwhile, held, {
        "holders": 0, "spools": before["spools"], "descriptors": before["descriptors"] + 4},
        before)
    assert all(status == 200 and 0 < body < BLOB for status, body in sent), sent
    # The copy went on, once, from one upstream read.
    await _copied(upstream, done + 2)
    print(f"in ECR {time.monotonic() - started:.1f} s after the holders asked")
    assert registry.asked == ["a", "b"], registry.asked
    assert await gw.logged("made no progress within limits.send_idle_timeout_seconds")
    _no_handler_errors(gw)


async def _copied(emulator: EmulatorProcess, layers: int) -> None:
    """Wait (up to a minute) until ECR completed ``layers`` layer uploads."""
    deadline = time.monotonic() + 60
    while len(emulator.requests("CompleteLayerUpload")) < layers:
        assert time.monotonic() < deadline, "the copy into ECR did not finish"
        await asyncio.sleep(0.5)

