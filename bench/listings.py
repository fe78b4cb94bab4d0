"""The listings rows: paging through a repository of many tags and a catalog of many
repositories with ``?n=100``, following the Link headers, on a gateway of its own.

The data is made through the emulator's ECR API (one small image under every tag; empty
repositories), on an emulator that leaves its writes to the page cache so that tens of
thousands of PutImage calls take a minute or two rather than many. Each listing is paged
twice: the first pass reads it from ECR (counted in the emulator's request log: at most one
ListImages / DescribeRepositories page of 1,000 per 1,000 names), the second, within the tag
TTL, must make no ECR call; its per-page latencies give p50 and p99. Every pass is checked
to return every name once, in order.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bench.report import Row
from bench.services import EmulatorProcess, Gateway
from tests.support.seeding import create_repositories, tag_many

# profile → (tags in one repository, repositories in the catalog)
SIZES = {"full": (50_000, 5_000), "quick": (3_000, 1_200), "smoke": (250, 120)}
REPOSITORY = "bench/many-tags"
PAGE = 100
LATENCY_MS = 50.0


async def _page_all(base: str, path: str, key: str) -> tuple[list[str], list[float]]:
    """Every name by following rel="next" from ``path?n=PAGE``, and each page's seconds."""
    names: list[str] = []
    seconds: list[float] = []
    url: str | None = f"{path}?n={PAGE}"
    async with aiohttp.ClientSession(base) as http:
        while url is not None:
            started = time.perf_counter()
            async with http.get(url) as answer:
                if answer.status != 200:
                    raise RuntimeError(f"GET {url}: {answer.status} {await answer.text()}")
                page = (await answer.json())[key]
                link = answer.headers.get("Link")
            seconds.append(time.perf_counter() - started)
            names += page
            url = None
            if link is not None:
                url = link[1:link.index(">")]
                if url != f"{path}?{urlencode({'n': PAGE, 'last': page[-1]})}":
                    raise RuntimeError(f"unexpected Link header {link!r}")
    return names, seconds


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def run(work: Path, profile: str, log: Callable[[str], None]) -> tuple[list[Row], dict[str, Any]]:
    tag_count, repository_count = SIZES[profile]
    tags = [f"v{i}.{i % 10}" for i in range(tag_count)]
    repositories = [f"bench/repo-{i}" for i in range(repository_count)]
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    with EmulatorProcess(work / "listings-emulator", env={"ECR_EMULATOR_DURABLE": "0"}) as emu:
        started = time.monotonic()
        asyncio.run(tag_many(emu.url, REPOSITORY, tags))
        asyncio.run(create_repositories(emu.url, repositories))
        raw["seed_seconds"] = round(time.monotonic() - started, 1)
        log(f"  made {tag_count} tags and {repository_count} repositories in "
            f"{raw['seed_seconds']:.0f} s")
        gateway = Gateway(work / "gw-listings", {"log_level": "info",
                                                 "cache": {"tag_ttl_seconds": 3600}}, emu.url)
        gateway.start()
        try:
            for what, path, key, action, expected in (
                    ("tags", f"/v2/{REPOSITORY}/tags/list", "tags", "ListImages", sorted(tags)),
                    ("catalog", "/v2/_catalog", "repositories", "DescribeRepositories",
                     sorted([*repositories, REPOSITORY]))):
                emu.clear_requests()
                cold, _ = asyncio.run(_page_all(gateway.url, path, key))
                cold_calls = len(emu.requests(action))
                emu.clear_requests()
                warm, seconds = asyncio.run(_page_all(gateway.url, path, key))
                warm_calls = len(emu.requests(action))
                if cold != expected or warm != expected:
                    raise RuntimeError(f"{path}: the pages do not hold every name once, "
                                       "in order")
                pages, bound = len(seconds), math.ceil(len(expected) / 1000)
                p50, p99 = (_percentile(seconds, s) * 1000 for s in (0.5, 0.99))
                raw[what] = {"names": len(expected), "pages": pages, "cold_calls": cold_calls,
                             "warm_calls": warm_calls, "page_ms": [s * 1000 for s in seconds]}
                good = 1 <= cold_calls <= bound and warm_calls == 0
                label = f"{len(expected):,} {'tags' if what == 'tags' else 'repositories'}"
                rows.append(Row(
                    f"listings_{what}_calls",
                    f"{action} calls paging {label} (n={PAGE}, {pages} pages), first pass "
                    "/ again within the TTL", f"≤ {bound} / 0", value=1.0 if good else 0.0,
                    bound=1.0, better="higher",
                    measured=f"{cold_calls} / {warm_calls} (every name once, in order)",
                    extra={"short": f"{what} listing ECR calls", "check": True}))
                rows.append(Row(
                    f"listings_{what}_p99",
                    f"warm {what} page (n={PAGE}) of {label}, latency p50 / p99",
                    f"p99 ≤ {LATENCY_MS:g} ms", value=p99, bound=LATENCY_MS,
                    measured=f"{p50:.1f} / {p99:.1f} ms",
                    extra={"short": f"{what} page p99 ms"}))
        finally:
            gateway.stop()
    return rows, raw
