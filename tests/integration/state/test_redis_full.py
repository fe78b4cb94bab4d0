"""Redis full (``maxmemory`` with ``noeviction``: every write that may take memory is refused
with OOM): a client's request gets a clear 503, never a 500 or half-stored state; what it
was told is received stays, and once Redis has room again the upload goes on from its
Range, on either replica, and completes with the right bytes; no tail stays counted
against ``limits.max_upload_tail_bytes``."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path

import aiohttp
import redis as sync_redis
import redis.asyncio as aioredis
from redis.exceptions import OutOfMemoryError

from tests.integration.state.conftest import redis_state, replica_pair
from tests.integration.state.test_replicas import (
    OCTET,
    digest_of,
    finish,
    offset_of,
    patch,
    push_manifest,
    read_blob,
    start,
)
from tests.support.emulator import EmulatorProcess
from tests.support.redis import RedisServer

MiB = 1024 * 1024


async def _fill(raw: aioredis.Redis) -> int:
    """Write junk until Redis refuses: the keys written."""
    for index in range(10_000):
        try:
            await raw.set(f"junk:{index}", b"j" * (256 * 1024))
        except OutOfMemoryError:
            return index
    raise AssertionError("Redis never filled up")


async def test_a_full_redis_refuses_clearly_and_loses_nothing_acknowledged(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis",
                         extra=["--maxmemory", "24mb", "--maxmemory-policy", "noeviction"])
    name = f"replicas/full-{os.urandom(4).hex()}"
    layer = os.urandom(3 * MiB)
    with server, replica_pair(tmp_path, upstream, state := redis_state(server)) as (a, b):
        raw = aioredis.Redis.from_url(server.url)
        try:
            async with aiohttp.ClientSession() as session:
                location = await start(session, a, name)
                location = await patch(session, a, location, layer[:MiB], 0)
                junk = await _fill(raw)

                for gateway, method, url, body in (
                        (b, "PATCH", location, layer[MiB:2 * MiB]),
                        (a, "POST", f"/v2/{name}/blobs/uploads/", b""),
                        (b, "PUT", f"{location}&digest={digest_of(layer)}"
                         if "?" in location else f"{location}?digest={digest_of(layer)}",
                         layer[MiB:])):
                    headers = dict(OCTET)
                    if method == "PATCH":
                        headers["Content-Range"] = f"{MiB}-{2 * MiB - 1}"
                    async with session.request(method, gateway.url + url, data=body,
                                               headers=headers) as r:
                        text = await r.text()
                        assert r.status == 503, (method, r.status, text)
                        assert r.headers["Retry-After"], method
                        assert (await r.json())["errors"][0]["code"] == "UNAVAILABLE"

                # Room again: what the client was told stays, on either replica.
                await raw.delete(*(f"junk:{index}" for index in range(junk)))
                assert await offset_of(session, a, location) == MiB
                assert await offset_of(session, b, location) == MiB
                location = await patch(session, b, location, layer[MiB:], MiB)
                await finish(session, a, location, digest_of(layer))
                await push_manifest(session, b, name, layer)
                assert await read_blob(session, a, name, digest_of(layer)) == layer
                # No tail is left counted against the bound over all clients.
                assert not await raw.keys(f"{state['key_prefix']}*tail*")
        finally:
            await raw.aclose()
    assert "Traceback" not in "\n".join(a.log_lines + b.log_lines)


class _FillsBeforeRecord:
    """A TCP proxy (threads of its own: it serves while the test blocks) that passes the
    gateways' Redis connections on to ``redis``. Once ``armed``, the first command that
    records a staged blob's holder waits until Redis is full (filled through a connection of
    the proxy's own, kept open: what it wrote stays counted): the record is the first write
    Redis refuses, everything the request wrote before it went through."""

    def __init__(self, redis: RedisServer) -> None:
        self.redis = redis
        self.armed = False
        self.filled = 0
        self.raw = sync_redis.Redis(port=redis.port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                near, _ = self._listener.accept()
                far = socket.create_connection(("127.0.0.1", self.redis.port))
                threading.Thread(target=self._pipe, args=(near, far, True), daemon=True).start()
                threading.Thread(target=self._pipe, args=(far, near, False),
                                 daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, commands: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if commands and self.armed and b"staged:{" in data and b"HSET" in data:
                    self.armed = False
                    self._fill()
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _fill(self) -> None:
        """Big writes until Redis refuses, then small ones: no room is left."""
        for size in (256 * 1024, 64):
            with contextlib.suppress(OutOfMemoryError):
                for _ in range(100_000):
                    self.raw.set(f"junk:{self.filled}", b"j" * size)
                    self.filled += 1

    def close(self) -> None:
        self._listener.close()
        self.raw.close()


async def test_a_staged_blob_record_refused_by_a_full_redis_is_no_201(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """The record that lets the other replicas read a blob before any manifest references
    it (who holds it staged) is refused by a full Redis: the client gets 503 UNAVAILABLE with
    Retry-After, not 201 (the record was only logged, and the blob, told stored, read as
    unknown through the other replica); nothing is half-stored (the repository does not hold
    the layer yet, the upload stands at its offset), and once Redis has room again the same
    PUT, on the other replica, completes it and the blob reads back through both."""
    server = RedisServer(tmp_path / "redis",
                         extra=["--maxmemory", "8mb", "--maxmemory-policy", "noeviction"])
    name = f"replicas/full-record-{os.urandom(4).hex()}"
    blob = os.urandom(100_000)  # its tail waits in Redis until the PUT
    digest = digest_of(blob)
    with server:
        proxy = _FillsBeforeRecord(server)
        try:
            state = redis_state(server)
            state["redis_url"] = f"redis://127.0.0.1:{proxy.port}/0"
            with replica_pair(tmp_path, upstream, state) as (a, b):
                raw = aioredis.Redis.from_url(server.url)
                try:
                    async with aiohttp.ClientSession() as session:
                        location = await patch(session, a, await start(session, a, name),
                                               blob, 0)
                        sep = "&" if "?" in location else "?"
                        proxy.armed = True
                        async with session.put(f"{a.url}{location}{sep}digest={digest}",
                                               headers=OCTET) as r:
                            assert proxy.filled, "the record was never sent"
                            assert r.status == 503, (r.status, await r.text())
                            assert r.headers["Retry-After"]
                            error = (await r.json())["errors"][0]
                            assert error["code"] == "UNAVAILABLE"
                            assert "could not be recorded" in error["message"]
                        for gateway in (a, b):  # not half-stored
                            async with session.head(
                                    f"{gateway.url}/v2/{name}/blobs/{digest}") as r:
                                assert r.status == 404, gateway.url

                        await raw.delete(*await raw.keys("junk:*"))  # room again
                        assert await offset_of(session, b, location) == len(blob)
                        await finish(session, b, location, digest)
                        for gateway in (b, a):
                            assert await read_blob(session, gateway, name, digest) == blob
                finally:
                    await raw.aclose()
        finally:
            proxy.close()
    assert "Traceback" not in "\n".join(a.log_lines + b.log_lines)
