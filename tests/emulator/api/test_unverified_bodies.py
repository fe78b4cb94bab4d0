"""What a request body costs before its signature is checked, at its end.

Anyone who knows an access key id (not its secret) gets that far. The emulator must then
hold no more than the bytes that arrived, and let go of them as soon as the caller leaves."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.support.emulator import REGION, EmulatorProcess, ecr_client

MiB = 1024 * 1024
TARGET = "AmazonEC2ContainerRegistry_V20150921.UploadLayerPart"
# An UploadLayerPart naming no upload: its blob is decoded into memory, not streamed to a file.
HEAD = (b'{"repositoryName":"nobody/here","uploadId":"00000000-0000-4000-8000-000000000000",'
        b'"partFirstByte":0,"partLastByte":1,"layerPartBlob":"')


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None, status
    return int(match[1]) * 1024


def _request_head(emulator: EmulatorProcess, length: int, target: str = TARGET) -> bytes:
    """Headers signed with the emulator's key id and a secret that is not its secret."""
    request = AWSRequest(method="POST", url=emulator.url + "/", data=b"{}", headers={
        "X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(Credentials(emulator.access_key_id, "not-the-secret"), "ecr",
              REGION).add_auth(request)
    headers = {**dict(request.headers.items()), "Host": emulator.url.split("://")[1],
               "Content-Length": str(length)}
    return ("POST / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "\r\n").encode()


async def _open(emulator: EmulatorProcess, length: int,
                body: bytes) -> asyncio.StreamWriter:
    _, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    writer.write(_request_head(emulator, length) + body)
    await writer.drain()
    return writer


async def _send(emulator: EmulatorProcess, target: str, length: int,
                body: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send ``body`` of a request announcing ``length`` bytes; a connection the emulator
    answers and closes midway is left as it is."""
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    with contextlib.suppress(ConnectionError):
        writer.write(_request_head(emulator, length, target) + body)
        await writer.drain()
    return reader, writer


async def test_a_length_announced_is_not_memory_reserved(emulator: EmulatorProcess) -> None:
    """Sixteen bodies announcing 32 MiB each, of which 130 bytes arrive, held open."""
    before = _rss(emulator.pid)
    writers = [await _open(emulator, 32 * MiB, HEAD + b"AAAA") for _ in range(16)]
    await asyncio.sleep(1.5)
    grown = _rss(emulator.pid) - before
    for writer in writers:
        writer.close()
    # Sized from Content-Length, each had 24 MiB (384 MiB in all) for its few bytes.
    assert grown < 64 * MiB, f"{grown // MiB} MiB for {16 * (len(HEAD) + 4)} bytes received"


async def test_a_body_abandoned_midway_is_freed_at_once(emulator: EmulatorProcess) -> None:
    """Eight callers send 16 MiB of a blob each, then go away before its end."""
    blob = b"A" * (16 * MiB)
    before = _rss(emulator.pid)
    writers = [await _open(emulator, 32 * MiB, HEAD + blob) for _ in range(8)]
    await asyncio.sleep(1.5)
    for writer in writers:
        writer.close()
    await asyncio.sleep(1.5)
    kept = _rss(emulator.pid) - before
    # Each abandoned request's 12 MiB of decoded blob stayed (96 MiB in all) until a full
    # garbage collection, whenever that came.
    assert kept < 48 * MiB, f"{kept // MiB} MiB still held after the callers left"


async def test_unverified_bodies_share_one_memory_budget(emulator: EmulatorProcess) -> None:
    """Twelve PutImage bodies of 30 MB each (no blob member: all of it is held until the
    signature is checked at the body's end), held open just short of their end."""
    manifest = b'{"repositoryName":"nobody/here","imageManifest":"' + b"A" * (30 * MiB)
    before = _rss(emulator.pid)
    sent = [await _send(emulator, "AmazonEC2ContainerRegistry_V20150921.PutImage",
                        32 * MiB, manifest) for _ in range(12)]
    await asyncio.sleep(1.5)
    grown = _rss(emulator.pid) - before
    async with ecr_client(emulator.url) as ecr:  # small calls go on meanwhile
        await ecr.describe_repositories()
    answers = []
    for reader, writer in sent:
        with contextlib.suppress(TimeoutError, ConnectionError):
            answers.append(await asyncio.wait_for(reader.read(4096), 0.2))
        writer.close()
    # Each body was held whole: 360 MB for calls nobody could have signed.
    assert grown < 192 * MiB, f"{grown // MiB} MiB held for unverified bodies"
    throttled = [a for a in answers if b"ThrottlingException" in a]
    assert throttled and all(a.startswith(b"HTTP/1.1 400 ") for a in throttled), answers
