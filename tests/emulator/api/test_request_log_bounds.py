"""The request log under a flood of refused requests from someone holding no key.

Every request is logged, unsigned ones too, with the caller's own texts (X-Amz-Target, Range):
those must grow neither the memory nor the data folder without bound."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.emulator import EmulatorProcess

MiB = 1024 * 1024
LONG = "X" * 8000  # just under aiohttp's limit on one header


@pytest.fixture
def closed(tmp_path: Path) -> Iterator[EmulatorProcess]:
    """As embedded in a gateway: credentials on, control endpoints off (so the request log
    has no in-memory view); a 1 MiB log file."""
    with EmulatorProcess(tmp_path / "ecr", admin=False,
                         env={"ECR_EMULATOR_REQUEST_LOG_MAX_BYTES": str(MiB)}) as emulator:
        yield emulator


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None, status
    return int(match[1]) * 1024


async def _flood(url: str, count: int) -> set[int]:
    limit = asyncio.Semaphore(32)

    async def one(session: aiohttp.ClientSession, i: int) -> int:
        async with limit:
            if i % 2:
                request = session.post(f"{url}/", data=b"{}", headers={"X-Amz-Target": LONG})
            else:
                request = session.get(f"{url}/_emulator/layers/sha256:{'0' * 64}",
                                      headers={"Range": f"bytes=0-1,{LONG}"})
            async with request as r:
                await r.read()
                return r.status

    async with aiohttp.ClientSession() as session:
        return set(await asyncio.gather(*(one(session, i) for i in range(count))))


async def test_unsigned_requests_cannot_fill_memory_or_disk(closed: EmulatorProcess) -> None:
    await _flood(closed.url, 200)  # the process's own buffers, grown once
    before = _rss(closed.pid)
    assert await _flood(closed.url, 20_000) == {403}
    grown = _rss(closed.pid) - before
    await asyncio.sleep(1.0)  # flushed every half second
    log = closed.data_dir / "requests.log"
    sizes = [path.stat().st_size for path in (log, log.with_name("requests.log.1"))
             if path.exists()]
    # Kept whole, the entries took 168 MB of memory and as much disk, for ever; cut short,
    # still 26 MiB of memory that no one can read without the control endpoints.
    assert sum(sizes) <= 2 * MiB and max(sizes) <= MiB, sizes
    assert grown < 8 * MiB, f"{grown // MiB} MiB for 20,000 refused requests"
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["status"] == 403 and len(json.dumps(entry)) < 2000, entry
