"""BodyReads on a real loopback TCP connection: a body sent in small pieces is read in large
reads, its last bytes still wake the reader, a sender slower than the mark is not taken for a
stall, and the mark is gone once the body's reading ends."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from ecr_model.body_reads import READ_SIZE, BodyReads

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_RCVLOWAT as Linux has it")


@dataclass
class Receiver(asyncio.Protocol):
    length: int
    reads: list[int] = field(default_factory=list)
    body: BodyReads | None = None
    transport: Any = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.body = BodyReads(transport, self.length)
        self.body.before_wait(0)

    def data_received(self, data: bytes) -> None:
        self.reads.append(len(data))
        self.arrived.set()
        assert self.body is not None
        self.body.before_wait(sum(self.reads))


@dataclass
class Connection:
    receiver: Receiver
    sender: socket.socket


Connect = Callable[[int], Awaitable[Connection]]  # a connection whose body has this length


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    servers: list[asyncio.Server] = []
    senders: list[socket.socket] = []

    async def open_(length: int) -> Connection:
        loop = asyncio.get_running_loop()
        receiver = Receiver(length)
        server = await loop.create_server(lambda: receiver, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        sender = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port))
        senders.append(sender)
        await asyncio.sleep(0.05)  # connection_made has run
        return Connection(receiver, sender)

    yield open_
    for sender in senders:
        sender.close()
    for server in servers:
        server.close()


def _send_slowly(sender: socket.socket, total: int, piece: int, pause: float) -> None:
    sent = 0
    while sent < total:
        size = min(piece, total - sent)
        sender.sendall(b"x" * size)
        sent += size
        time.sleep(pause)


async def _until(receiver: Receiver, total: int, within: float) -> None:
    async with asyncio.timeout(within):
        while sum(receiver.reads) < total:
            receiver.arrived.clear()
            await receiver.arrived.wait()


async def test_a_body_sent_in_small_pieces_is_read_in_large_reads(connect: Connect) -> None:
    total = 3 * READ_SIZE + 12_345  # its end is not a whole read
    conn = await connect(total)
    sending = asyncio.to_thread(_send_slowly, conn.sender, total, 16 * 1024, 0.001)
    await asyncio.gather(sending, _until(conn.receiver, total, 10))
    reads = conn.receiver.reads
    assert sum(reads) == total
    # about 190 pieces of 16 KiB, in 4 reads or so (one per READ_SIZE, the rest at the end)
    assert len(reads) <= 6, reads
    assert all(size >= READ_SIZE for size in reads[:-1][:3]), reads


async def test_the_transport_reads_in_large_reads_only_while_a_body_is_owed(
        connect: Connect) -> None:
    conn = await connect(5 * READ_SIZE)
    transport = conn.receiver.transport
    own = type(transport).max_size
    assert own < READ_SIZE  # asyncio's own read size, which a body's reads go beyond
    assert transport.max_size == READ_SIZE
    assert conn.receiver.body is not None
    conn.receiver.body.before_wait(5 * READ_SIZE - 1000)  # 1000 bytes still owed
    assert transport.max_size == own  # never below the transport's own
    conn.receiver.body.close()
    assert transport.max_size == own


async def test_a_sender_slower_than_the_mark_is_no_stall(connect: Connect) -> None:
    conn = await connect(1 << 20)
    conn.sender.sendall(b"y" * 1000)
    await asyncio.sleep(0.3)
    assert conn.receiver.reads == []  # under the mark: still in the kernel
    assert conn.receiver.body is not None
    assert conn.receiver.body.stalled() is False  # bytes came: not a stall
    await _until(conn.receiver, 1000, 5)  # the mark is down: they are read now
    conn.sender.sendall(b"z" * 10)
    await _until(conn.receiver, 1010, 5)  # and every byte after, as it comes
    assert conn.receiver.body.stalled() is True  # nothing queued: a stall


async def test_nothing_sent_is_a_stall_and_the_mark_ends_with_the_body(connect: Connect) -> None:
    conn = await connect(1 << 20)
    body = conn.receiver.body
    assert body is not None
    assert body.stalled() is True
    conn2 = await connect(1 << 20)
    assert conn2.receiver.body is not None
    conn2.receiver.body.close()  # the body's reading ended (an error, a refusal)
    conn2.sender.sendall(b"next request")
    await _until(conn2.receiver, 12, 5)


def test_a_body_of_unknown_length_is_read_as_before() -> None:
    left, right = socket.socketpair()
    try:
        class Transport:
            def get_extra_info(self, name: str) -> socket.socket:
                return left
        reads = BodyReads(Transport(), None)
        reads.before_wait(0)
        assert left.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
    finally:
        left.close()
        right.close()
