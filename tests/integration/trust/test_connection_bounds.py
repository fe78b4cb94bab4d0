"""Connections one client, or everyone, holds open are bounded (gateway/oci/connections.py).

Each connection is a file descriptor of the gateway's. With the open-file limit a systemd
service gets by default (1024 soft), one client holding 1,100 idle connections from one
address stopped the gateway: ``accept()`` failed, no one else was answered (a bystander's
``GET /v2/`` and a skopeo push waited 30 s for nothing), and asyncio logged a traceback at
every try (46 MB of log in 90 s). Now the gateway raises its soft limit to the hard one at
start (the test starts it with half), one client's connections past its bound get 429 and
everyone's past the total 503, each answered and closed before anything of it is read.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

from tests.support.clients import free_port
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

PER_CLIENT = 8
TOTAL = 40


@contextmanager
def _lower_soft_open_file_limit() -> Iterator[int]:
    """Processes started meanwhile inherit a soft open-file limit of half the hard one (this
    process's own descriptors stay well below it); the hard limit."""
    was, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard // 2, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (was, hard))


def _open_files(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit")


def _connect(port: int, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
    sock.settimeout(10)
    return sock


def _refusal(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, object]] | None:
    """The answer the gateway sent a connection it did not take, as it made it; None for
    one it took (nothing sent unasked). Asked a moment after the connection was made."""
    sock.setblocking(False)
    try:
        got = sock.recv(65536)
    except BlockingIOError:
        return None
    finally:
        sock.settimeout(10)
    while got and b"\r\n\r\n" not in got:
        got += sock.recv(65536)
    top, _, body = got.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    while len(body) < int(headers["Content-Length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(body)


async def _get(url: str, source: str) -> int:
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"{url}/v2/", timeout=aiohttp.ClientTimeout(total=10)) as r:
            await r.read()
            return r.status


def _ask(sock: socket.socket, path: str) -> tuple[int, bytes]:
    """``GET path`` on a connection the gateway holds already: the status and body."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    got = b""
    while b"\r\n\r\n" not in got:
        got += sock.recv(65536)
    top, _, body = got.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in top.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(top.split()[1]), body


def _metric_on(sock: socket.socket, name: str) -> str:
    """``name``'s lines of /metrics, asked on a connection the gateway holds already."""
    _, body = _ask(sock, "/metrics")
    return "\n".join(line for line in body.decode().splitlines() if line.startswith(name))


async def _served_again(url: str, source: str) -> None:
    """Wait (5 s at most) for a connection from ``source`` to be served again."""
    for _ in range(50):
        if await _get(url, source) == 200:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("connections not given back")


async def _metric(url: str, name: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/metrics") as r:
            return "\n".join(line for line in (await r.text()).splitlines()
                             if line.startswith(name))


async def test_one_client_and_everyone_hold_a_bounded_number_of_connections(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    limits = {"max_client_connections": TOTAL, "max_connections_per_client": PER_CLIENT}
    with _lower_soft_open_file_limit() as hard, GatewayProcess(
            tmp_path / "gateway", {"limits": limits}, upstream_url=upstream.url) as gateway:
        assert gateway.process is not None
        assert _open_files(gateway.process.pid) == (hard, hard)  # raised at start

        # One client: its first PER_CLIENT connections are taken, the rest refused at once.
        attacker = [_connect(gateway.port, "127.0.0.1") for _ in range(PER_CLIENT + 12)]
        await asyncio.sleep(0.5)
        answers = await asyncio.to_thread(lambda: [_refusal(sock) for sock in attacker])
        assert answers[:PER_CLIENT] == [None] * PER_CLIENT, answers[:PER_CLIENT]
        for answer in answers[PER_CLIENT:]:
            assert answer is not None, answers
            status, headers, body = answer
            assert status == 429 and headers["Retry-After"] == "1", answer
            assert headers["Content-Type"] == "application/json"
            assert body == {"errors": [{
                "code": "TOOMANYREQUESTS",
                "message": "this client holds as many connections as one client may",
                "detail": {"limit": PER_CLIENT}}]}, body
        # Its held connections still work, and a bystander is answered.
        held = attacker[0]
        assert await asyncio.to_thread(_ask, held, "/v2/") == (200, b"{}")
        assert await _get(gateway.url, "127.0.0.2") == 200

        # Everyone: more clients fill the total, and the next connection from anyone is
        # refused with 503 until some close.
        others = [_connect(gateway.port, f"127.0.0.{3 + n // PER_CLIENT}")
                  for n in range(TOTAL - PER_CLIENT)]
        await asyncio.sleep(0.5)
        assert await asyncio.to_thread(lambda: [_refusal(sock) for sock in others]) \
            == [None] * len(others)
        late = _connect(gateway.port, "127.0.0.100")
        await asyncio.sleep(0.5)
        answer = await asyncio.to_thread(_refusal, late)
        assert answer is not None and answer[0] == 503, answer
        assert answer[1]["Retry-After"] == "1"
        assert answer[2]["errors"][0]["code"] == "UNAVAILABLE"  # type: ignore[index]
        open_now = await asyncio.to_thread(_metric_on, held, "ecr_gateway_client_connections ")
        for sock in [*attacker, *others, late]:
            sock.close()
        await _served_again(gateway.url, "127.0.0.100")  # given back as they close
        refusals = await _metric(gateway.url, "ecr_gateway_connection_refusals_total")
    assert open_now == f"ecr_gateway_client_connections {float(TOTAL)}", open_now
    assert 'ecr_gateway_connection_refusals_total{bound="client"} 12.0' in refusals, refusals
    assert 'ecr_gateway_connection_refusals_total{bound="total"} 1.0' in refusals, refusals
    log = "\n".join(gateway.log_lines)
    assert "Traceback" not in log
    assert log.count("connection from 127.0.0.1 refused: the client is at its connection "
                     "bound (limits.max_connections_per_client 8)") == 1, log
    assert log.count("connection from 127.0.0.100 refused: the gateway is at its connection "
                     "bound (limits.max_client_connections 40)") == 1, log


async def test_the_metrics_port_counts_in_the_same_bounds(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """``metrics_listen``'s port takes descriptors of the same process: its connections were
    not bounded at all, so whoever reached it could exhaust them for the registry port too.
    They now count in the same bounds as the registry port's."""
    metrics_port = free_port()
    limits = {"max_client_connections": TOTAL, "max_connections_per_client": PER_CLIENT}
    with GatewayProcess(tmp_path / "gateway", {"limits": limits,
                                               "metrics_listen": f"127.0.0.1:{metrics_port}"},
                        upstream_url=upstream.url) as gateway:
        on_metrics = [_connect(metrics_port, "127.0.0.1") for _ in range(PER_CLIENT + 2)]
        on_registry = _connect(gateway.port, "127.0.0.1")
        await asyncio.sleep(0.5)
        answers = await asyncio.to_thread(
            lambda: [_refusal(sock) for sock in [*on_metrics, on_registry]])
        assert answers[:PER_CLIENT] == [None] * PER_CLIENT, answers
        assert [answer[0] if answer else None for answer in answers[PER_CLIENT:]] \
            == [429, 429, 429], answers
        assert "ecr_gateway_client_connections 8.0" in await asyncio.to_thread(
            _metric_on, on_metrics[0], "ecr_gateway_client_connections ")
        for sock in [*on_metrics, on_registry]:
            sock.close()
        await _served_again(gateway.url, "127.0.0.1")
