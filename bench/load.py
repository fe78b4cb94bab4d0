"""Manifest HEAD load: ``hey -c 64`` (Debian package ``hey``) when installed, else an
equivalent loopback load generator on aiohttp (64 concurrent keep-alive workers for a fixed
duration). The report says which one ran."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

import aiohttp

from bench.ocihttp import ACCEPT


@dataclass
class LoadResult:
    tool: str
    requests: int
    ok: int
    seconds: float
    rps: float
    p99_ms: float

    def as_dict(self) -> dict[str, float | int | str]:
        return {"tool": self.tool, "requests": self.requests, "ok": self.ok,
                "seconds": round(self.seconds, 3), "rps": round(self.rps, 1),
                "p99_ms": round(self.p99_ms, 2)}


def tool_name() -> str:
    return "hey" if shutil.which("hey") else "python-aiohttp"


def head_load(url: str, seconds: float, concurrency: int = 64) -> LoadResult:
    if shutil.which("hey"):
        return _hey(url, seconds, concurrency)
    return asyncio.run(_python_load(url, seconds, concurrency))


def _hey(url: str, seconds: float, concurrency: int) -> LoadResult:
    duration = f"{max(1, round(seconds))}s"
    out = subprocess.run(["hey", "-z", duration, "-c", str(concurrency), "-m", "HEAD",
                          "-H", f"Accept: {ACCEPT}", url],
                         capture_output=True, text=True, timeout=seconds + 120, check=True).stdout
    rps = float(_find(r"Requests/sec:\s+([\d.]+)", out))
    total = float(_find(r"Total:\s+([\d.]+) secs", out))
    p99 = float(_find(r"99%+ in ([\d.]+) secs", out)) * 1000
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    requests = sum(codes.values())
    return LoadResult("hey", requests, codes.get(200, 0), total, rps, p99)


def _find(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"unexpected hey output (no {pattern!r}):\n{text[-2000:]}")
    return match[1]


async def _python_load(url: str, seconds: float, concurrency: int) -> LoadResult:
    latencies: list[float] = []
    ok = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal ok
            while time.monotonic() < deadline:
                started = time.monotonic()
                async with http.head(url, headers={"Accept": ACCEPT}) as response:
                    ok += response.status == 200
                latencies.append(time.monotonic() - started)

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - began
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    return LoadResult("python-aiohttp", len(latencies), ok, elapsed,
                      len(latencies) / elapsed if elapsed else 0.0, p99 * 1000)
