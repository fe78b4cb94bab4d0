"""What a containerd-style pull through the gateway costs in ECR API calls.

    python -m bench.mirror [--layers 5] [--layer-kib 1024] [--concurrency 50]

Starts an ECR emulator and one gateway per configuration (blob redirect; proxy with the
local blob cache; redirect with the tag cache off), pushes fresh images through a separate
gateway (so the measured gateway starts cold), then pulls the way containerd does as a
mirror client (HEAD the tag, GET the manifest by digest, GET every blob, all with
``?ns=``) and counts the ECR calls in the emulator's request log:

* cold: the first pull of an image (the issue's budget: at most N+3 calls for N layers);
* warm: the same pull again within the tag TTL (0 calls with the caches on);
* concurrent: ``--concurrency`` simultaneous pulls of another cold image (single-flight
  makes that cost what one pull costs).

"storage reads" counts reads of presigned layer URLs (S3's part, not ECR calls): in proxy
mode with the blob cache a warm pull reads nothing from storage either.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.mirror.helpers import check_pulled, downloads, ecr_calls, pull, push_image
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

NS = "registry.example.com"
MIRRORS: dict[str, dict[str, Any]] = {NS: {}}


def configurations(root: Path) -> dict[str, dict[str, Any]]:
    return {
        "redirect": {"mirrors": MIRRORS, "cache": {"tag_ttl_seconds": 60}},
        "proxy + blob cache": {"mirrors": MIRRORS, "cache": {"tag_ttl_seconds": 60},
                               "blobs": {"mode": "proxy",
                                         "cache": {"path": str(root / "blob-cache")}}},
        "redirect, tag TTL 0": {"mirrors": MIRRORS, "cache": {"tag_ttl_seconds": 0}},
    }


async def measure(upstream: EmulatorProcess, pusher: GatewayProcess, gw: GatewayProcess,
                  layers: int, layer_bytes: int, concurrency: int) -> dict[str, Any]:
    sizes = (layer_bytes,) * layers
    image = await push_image(pusher.url, f"bench/{uuid.uuid4().hex[:10]}", layer_sizes=sizes)
    crowd = await push_image(pusher.url, f"bench/{uuid.uuid4().hex[:10]}", layer_sizes=sizes)
    row: dict[str, Any] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for phase in ("cold", "warm"):
            upstream.clear_requests()
            started = time.perf_counter()
            check_pulled(await pull(session, gw.url, image.name, "v1", NS), image)
            row[f"{phase}_ms"] = (time.perf_counter() - started) * 1000
            row[phase] = ecr_calls(upstream, image.name)
            row[f"{phase}_reads"] = len(downloads(upstream))
        upstream.clear_requests()
        started = time.perf_counter()
        pulls = await asyncio.gather(*(pull(session, gw.url, crowd.name, "v1", NS)
                                       for _ in range(concurrency)))
        row["crowd_ms"] = (time.perf_counter() - started) * 1000
        for pulled in pulls:
            check_pulled(pulled, crowd)
        row["crowd"] = ecr_calls(upstream, crowd.name)
        row["crowd_reads"] = len(downloads(upstream))
    return row


def _calls(counts: Counter[str]) -> str:
    total = sum(counts.values())
    parts = ", ".join(f"{action} {n}" for action, n in sorted(counts.items()))
    return f"{total} ({parts})" if parts else "0"


def render(rows: dict[str, dict[str, Any]], layers: int, concurrency: int) -> str:
    header = ["configuration", "cold pull: ECR calls", f"within N+3 = {layers + 3}",
              "warm pull: ECR calls", f"{concurrency} concurrent cold: ECR calls",
              "storage reads cold / warm / concurrent", "ms cold / warm / concurrent"]
    table = [header]
    for name, row in rows.items():
        table.append([
            name, _calls(row["cold"]), "yes" if sum(row["cold"].values()) <= layers + 3 else "NO",
            _calls(row["warm"]), _calls(row["crowd"]),
            f"{row['cold_reads']} / {row['warm_reads']} / {row['crowd_reads']}",
            f"{row['cold_ms']:.0f} / {row['warm_ms']:.0f} / {row['crowd_ms']:.0f}",
        ])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


async def run(layers: int, layer_bytes: int, concurrency: int) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-mirror-") as tmp:
        root = Path(tmp)
        with EmulatorProcess(root / "ecr") as upstream, \
                GatewayProcess(root / "pusher", {}, upstream_url=upstream.url) as pusher:
            rows = {}
            for name, config in configurations(root).items():
                with GatewayProcess(root / name.replace(" ", "-").replace(",", ""), config,
                                    upstream_url=upstream.url) as gw:
                    rows[name] = await measure(upstream, pusher, gw, layers, layer_bytes,
                                               concurrency)
    return render(rows, layers, concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=5, help="layers per image (N)")
    parser.add_argument("--layer-kib", type=int, default=1024, help="size of each layer")
    parser.add_argument("--concurrency", type=int, default=50, help="simultaneous pulls")
    args = parser.parse_args()
    table = asyncio.run(run(args.layers, args.layer_kib * 1024, args.concurrency))
    print(f"containerd-style pulls of an image with N={args.layers} layers of "
          f"{args.layer_kib} KiB through the gateway (ECR calls from the emulator's log)\n")
    print(table)


if __name__ == "__main__":
    main()
