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
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

from gateway.oci.tls_admission import MAX_REFUSING
from tests.integration.auth.helpers import TestCA
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


async def _get(url: str, source: str, tls: ssl.SSLContext | None = None) -> int:
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True,
                                     ssl=tls if tls is not None else True)
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


async def _served_again(url: str, source: str, tls: ssl.SSLContext | None = None) -> None:
    """Wait (5 s at most) for a connection from ``source`` to be served again."""
    for _ in range(50):
        try:
            if await _get(url, source, tls) == 200:
                return
        except aiohttp.ClientConnectionError:  # over TLS a refusal is a closed connection
            pass
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


def _read_to_the_end(sock: socket.socket) -> bytes:
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got


def _closed(sock: socket.socket) -> bool:
    """Whether the gateway closed ``sock`` (nothing was sent on it)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.settimeout(10)


def _served_over_tls(tmp_path: Path, limits: dict[str, float]
                     ) -> tuple[ssl.SSLContext, dict[str, object]]:
    """A configuration serving HTTPS with the connection bounds and ``limits``, and a client
    context trusting its certificate."""
    ca = TestCA.create(tmp_path / "ca")
    ca.issue(tmp_path / "server.crt", tmp_path / "server.key")
    config = {"limits": {"max_client_connections": TOTAL,
                         "max_connections_per_client": PER_CLIENT, **limits},
              "tls": {"cert_file": str(tmp_path / "server.crt"),
                      "key_file": str(tmp_path / "server.key")}}
    return ssl.create_default_context(cafile=str(ca.cert_path)), config


async def test_tls_connections_count_before_their_handshake(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """With TLS served by the gateway, asyncio tells a connection's handler of it once its
    handshake is done: connections that never began one were counted by no bound, so one
    address could hold descriptors without end (each for asyncio's 60 s handshake timeout,
    then opened again). They now count as they are accepted, must finish the handshake within
    ``limits.header_timeout_seconds``, and past a bound get their refusal over TLS, at most
    MAX_REFUSING at once (the rest closed unanswered)."""
    header_timeout = 4.0
    trusting, config = _served_over_tls(tmp_path, {"header_timeout_seconds": header_timeout})
    with GatewayProcess(tmp_path / "gateway", config, upstream_url=upstream.url) as gateway:
        assert gateway.url.startswith("https://")
        # One client opens its share of connections and never begins a handshake.
        silent = [_connect(gateway.port, "127.0.0.1") for _ in range(PER_CLIENT)]
        opened = time.monotonic()
        # Its next connection is told why over TLS, as in plain HTTP; a bystander is served.
        over = trusting.wrap_socket(_connect(gateway.port, "127.0.0.1"),
                                    server_hostname="127.0.0.1")
        answer = await asyncio.to_thread(_read_to_the_end, over)
        over.close()
        top, _, body = answer.partition(b"\r\n\r\n")
        assert top.startswith(b"HTTP/1.1 429 "), answer
        assert json.loads(body)["errors"][0]["code"] == "TOOMANYREQUESTS", answer
        assert await _get(gateway.url, "127.0.0.2", trusting) == 200
        # Connections past its bound that begin no handshake either: MAX_REFUSING of them
        # wait for one, the rest are closed at once.
        silent += [_connect(gateway.port, "127.0.0.1") for _ in range(MAX_REFUSING + 4)]
        await asyncio.sleep(0.5)
        assert [_closed(sock) for sock in silent] \
            == [False] * (PER_CLIENT + MAX_REFUSING) + [True] * 4
        assert await _get(gateway.url, "127.0.0.2", trusting) == 200
        # The handshakes not begun are given up after the header timeout, and the client's
        # connections given back: it is served again.
        while not all(_closed(sock) for sock in silent):
            assert time.monotonic() - opened < header_timeout + 5, "handshakes never cut"
            await asyncio.sleep(0.2)
        for sock in silent:
            sock.close()
        await _served_again(gateway.url, "127.0.0.1", trusting)
        # Counted once each: a served TLS connection holds one place, given back as it closes.
        held = [_connect(gateway.port, "127.0.0.3") for _ in range(PER_CLIENT)]
        wrapped = [trusting.wrap_socket(sock, server_hostname="127.0.0.1") for sock in held]
        connections = await _metric_tls(gateway.url, trusting)
        for sock in wrapped:
            sock.close()
        refusals = await _metric_tls(gateway.url, trusting,
                                     "ecr_gateway_connection_refusals_total")
    assert connections == f"ecr_gateway_client_connections {float(PER_CLIENT + 1)}", \
        connections  # the wrapped ones and the metrics request's own
    assert 'ecr_gateway_connection_refusals_total{bound="client"} 69.0' in refusals, refusals
    log = "\n".join(gateway.log_lines)
    assert "Traceback" not in log, log
    assert "connection from 127.0.0.1 refused: the client is at its connection bound" in log


async def _metric_tls(url: str, tls: ssl.SSLContext,
                      name: str = "ecr_gateway_client_connections ") -> str:
    connector = aiohttp.TCPConnector(ssl=tls, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"{url}/metrics") as r:
            return "\n".join(line for line in (await r.text()).splitlines()
                             if line.startswith(name))


def _unread_answers(port: int, source: str, tls: ssl.SSLContext, path: str,
                    requests: int) -> tuple[socket.socket, ssl.SSLObject, ssl.MemoryBIO]:
    """A TLS connection that asked for ``requests`` answers of ``path`` at once and reads
    none of them (a small receive buffer, nothing received after the handshake): the
    gateway's socket and write buffer stay full. The TLS session and the buffer its records
    go out through."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.settimeout(10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    session = tls.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    while True:
        try:
            session.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            incoming.write(sock.recv(65536))
    session.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() * requests)
    sock.setblocking(False)
    data, sent, until = outgoing.read(), 0, time.monotonic() + 5
    while sent < len(data) and time.monotonic() < until:  # as much as the gateway takes
        try:
            sent += sock.send(data[sent:])
        except BlockingIOError:
            time.sleep(0.05)
    assert sent == len(data), (sent, len(data))  # the gateway reads what comes after them
    sock.settimeout(10)
    return sock, session, outgoing


async def test_tls_connections_ended_by_their_peer_are_given_back(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """A TLS connection's end takes a bounded time, whoever ends it. A peer that asked for
    many answers, read none and sent its close_notify kept its socket, its place in the
    bounds and the requests writing to it for ever (still held after 290 s: asyncio closes
    the socket once its write buffer is sent, and the answers' send watch took a closing
    connection for gone); one that ended its stream instead (a TCP FIN, no close_notify) had
    every later answer dropped with a warning (5,541 lines for one connection), and the send
    watch logged a traceback for each answer left in such a connection's buffer once it was
    gone (354); one idle after its handshake held its place 30 s past the
    header timeout, waiting for a close_notify. Each is now given back within twice
    ``limits.header_timeout_seconds``."""
    header_timeout = 2.0
    trusting, config = _served_over_tls(tmp_path, {"header_timeout_seconds": header_timeout,
                                                   "send_idle_timeout_seconds": 2})
    with GatewayProcess(tmp_path / "gateway", config, upstream_url=upstream.url) as gateway:
        async def given_back(how: str, end: Callable[[], object]) -> None:
            assert await _metric_tls(gateway.url, trusting) \
                == "ecr_gateway_client_connections 2.0", how  # it and the metrics request
            end()
            ended = time.monotonic()
            while (now := await _metric_tls(gateway.url, trusting)) \
                    != "ecr_gateway_client_connections 1.0":
                # twice the header timeout, and room for a busy machine (asyncio's own
                # wait for a close_notify alone is 30 s)
                assert time.monotonic() - ended < 2 * header_timeout + 10, (how, now)
                await asyncio.sleep(0.5)

        idle = trusting.wrap_socket(_connect(gateway.port, "127.0.0.1"),
                                    server_hostname="127.0.0.1")
        await given_back("idle after its handshake", lambda: None)
        sock, session, outgoing = await asyncio.to_thread(
            _unread_answers, gateway.port, "127.0.0.2", trusting, "/v2/", 12000)
        await asyncio.sleep(1)  # the gateway's socket buffers fill

        def close_notify() -> None:
            try:
                session.unwrap()
            except ssl.SSLWantReadError:  # the gateway's close_notify is never read
                pass
            sock.sendall(outgoing.read())

        await given_back("close_notify, answers unread", close_notify)
        ending = (await asyncio.to_thread(
            _unread_answers, gateway.port, "127.0.0.3", trusting, "/v2/", 10000))[0]
        await asyncio.sleep(1)
        await given_back("end of stream, answers unread",
                         lambda: ending.shutdown(socket.SHUT_WR))
        for each in (idle, sock, ending):
            each.close()
        await asyncio.sleep(1)  # the send watch looks at its answers twice a second
    log = "\n".join(gateway.log_lines)
    assert "Traceback" not in log, log[log.find("Traceback") - 200:][:1500]
    assert "SSL connection is closed" not in log, log.count("SSL connection is closed")
