"""The control endpoints read at most 1 MiB of a body before its signature is checked,
whether the body announces its length or comes in chunks."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.support.emulator import REGION, EmulatorProcess

MiB = 1024 * 1024


def _rss(pid: int) -> int:
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(),
                      re.MULTILINE)
    assert match is not None
    return int(match[1]) * 1024


def _chunked_head(emulator: EmulatorProcess) -> bytes:
    """A fault rule's headers, signed with the emulator's key id and a wrong secret."""
    request = AWSRequest(method="POST", url=emulator.url + "/_emulator/faults", data=b"{}",
                         headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(emulator.access_key_id, "not-the-secret"), "emulator",
              REGION).add_auth(request)
    headers = {**dict(request.headers.items()), "Host": emulator.url.split("://")[1],
               "Transfer-Encoding": "chunked"}
    headers.pop("Content-Length", None)
    return ("POST /_emulator/faults HTTP/1.1\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()


async def _send_chunked(emulator: EmulatorProcess, size: int) -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter]:
    """``size`` bytes in 1 MiB chunks, the last chunk never sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    chunk = b"%x\r\n" % MiB + b" " * MiB + b"\r\n"
    with contextlib.suppress(ConnectionError):
        writer.write(_chunked_head(emulator))
        for _ in range(size // MiB):
            writer.write(chunk)
            await writer.drain()
    return reader, writer


async def test_a_chunked_control_body_is_cut_at_its_limit(emulator: EmulatorProcess) -> None:
    before = _rss(emulator.pid)
    sent = [await _send_chunked(emulator, 24 * MiB) for _ in range(8)]
    await asyncio.sleep(1.5)
    grown = _rss(emulator.pid) - before
    answers = []
    for reader, writer in sent:
        with contextlib.suppress(TimeoutError, ConnectionError):
            answers.append(await asyncio.wait_for(reader.read(4096), 1))
        writer.close()
    # Read whole (up to the API's 32 MiB), each held 24 MiB: 192 MiB in all.
    assert grown < 64 * MiB, f"{grown // MiB} MiB held for unsigned control bodies"
    assert answers and all(a.startswith(b"HTTP/1.1 413 ") for a in answers), answers
