"""Pull-through and ``ecr-gateway sync`` rows: a second distribution stands in for Docker
Hub (the source), the first (the reference) and the emulator are the stores.

* cold: one mirror client (aiohttp, digests checked, bytes discarded) pulls a fresh image
  through a gateway whose mirror fills ECR from the source, ÷ the same client pulling it
  from the source directly; warm: the same pull again (ECR holds it) ÷ direct.
* sync: ``ecr-gateway sync`` of N fresh images from the source into ECR ÷ ``skopeo sync`` of
  the same images into the reference registry, as throughput (higher is better).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench import ocihttp
from bench.images import FreshBytes
from bench.report import Row
from bench.services import Gateway, ReferenceRegistry
from tests.support.emulator import signing_key

MiB = 1024 * 1024
NS = {"ns": "docker.io"}


async def _push_image(base: str, repo: str, tag: str, size: int, fresh: FreshBytes) -> None:
    async with ocihttp.session() as http:
        hasher = hashlib.sha256()
        chunks = list(fresh.chunks(size))
        for chunk in chunks:
            hasher.update(chunk)
        layer = await ocihttp.push_blob(http, base, repo, chunks, size,
                                        "sha256:" + hasher.hexdigest())
        config = await ocihttp.push_bytes(http, base, repo, json.dumps(
            {"architecture": "amd64", "os": "linux", "tag": tag}).encode())
        await ocihttp.put_manifest(http, base, repo, tag, config, [layer])


async def _pull(base: str, repo: str, tag: str, params: dict[str, str] | None) -> float:
    """Seconds for the manifest and every blob (redirects followed, digests checked)."""
    started = time.monotonic()
    async with ocihttp.session() as http:
        async with http.get(f"{base}/v2/{repo}/manifests/{tag}", params=params,
                            headers={"Accept": ocihttp.ACCEPT}) as response:
            if response.status != 200:
                raise ocihttp.PushError(f"manifest: HTTP {response.status}")
            manifest = json.loads(await response.read())
        for blob in [manifest["config"], *manifest["layers"]]:
            hasher = hashlib.sha256()
            async with http.get(f"{base}/v2/{repo}/blobs/{blob['digest']}",
                                params=params) as response:
                if response.status != 200:
                    raise ocihttp.PushError(f"blob: HTTP {response.status}")
                async for chunk in response.content.iter_chunked(1 << 20):
                    hasher.update(chunk)
            if "sha256:" + hasher.hexdigest() != blob["digest"]:
                raise ocihttp.PushError("a blob read back with another digest")
    return time.monotonic() - started


def _sync_seconds(source: ReferenceRegistry, names: list[str], emulator_url: str,
                  work: Path) -> float:
    config = work / "sync.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(work / "sync-data"),
        "upstream": {"mode": "aws", "endpoint_url": emulator_url,
                     "access_key_id": "AKIDBENCHSYNC",
                     "secret_access_key": signing_key(emulator_url, "AKIDBENCHSYNC")[1]}}))
    images = work / "images.yaml"
    images.write_text(yaml.safe_dump({"images": [
        {"source": f"{source.url}/{name}", "destination": f"synced/{name}"} for name in names]}))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "sync", "--config",
                             str(config), "--file", str(images), "--parallel", "4"],
                            capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ecr-gateway sync failed:\n{result.stderr[-2000:]}")
    return time.monotonic() - started


def _skopeo_sync_seconds(source: ReferenceRegistry, names: list[str],
                         reference: ReferenceRegistry, work: Path) -> float:
    policy = work / "policy.json"
    policy.write_text('{"default":[{"type":"insecureAcceptAnything"}]}')
    spec = work / "skopeo-sync.yaml"
    spec.write_text(yaml.safe_dump({source.host: {"tls-verify": False,
                                                  "images-by-tag-regex": {
                                                      name: ".*" for name in names}}}))
    started = time.monotonic()
    result = subprocess.run([shutil.which("skopeo") or "skopeo", "--policy", str(policy),
                             "sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false",
                             str(spec), f"{reference.host}/skopeo-synced"],
                            capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"skopeo sync failed:\n{result.stderr[-2000:]}")
    return time.monotonic() - started


def run(bench: Any) -> list[Row]:
    """The section's rows (``bench`` is the running :class:`bench.run.Bench`)."""
    sizes = bench.sizes
    image = max(sizes.image // 2, MiB)  # 256 MiB in the full profile
    count = 20 if sizes.name == "full" else 4 if sizes.name == "quick" else 2
    sync_size = 8 * MiB if sizes.name == "full" else MiB
    source = ReferenceRegistry(bench.work / "pt-source").start()
    gateway = Gateway(bench.work / "gw-pullthrough", {
        "log_level": "info",
        "mirrors": {"docker.io": {"repository_prefix": "pt",
                                  "upstream": {"url": source.url}}}}, bench.emulator.url)
    gateway.start()
    try:
        # The gateway's own first requests (ECR clients, credentials) are not the fill's
        # cost: one untimed pull of another image first, as on a gateway that has run a while.
        warmup = f"library/warmup-{time.monotonic_ns()}"
        asyncio.run(_push_image(source.url, warmup, "v1", MiB, bench.fresh))
        asyncio.run(_pull(gateway.url, warmup, "v1", NS))
        cold, warm, direct = [], [], []
        for round_ in range(sizes.rounds):
            repo = f"library/pt{round_}-{time.monotonic_ns()}"
            asyncio.run(_push_image(source.url, repo, "v1", image, bench.fresh))
            direct.append(asyncio.run(_pull(source.url, repo, "v1", None)))
            cold.append(asyncio.run(_pull(gateway.url, repo, "v1", NS)))
            time.sleep(1.0)  # the fill's last PutImage lands
            warm.append(asyncio.run(_pull(gateway.url, repo, "v1", NS)))
            direct.append(asyncio.run(_pull(source.url, repo, "v1", None)))
        names = [f"library/sync{i}-{time.monotonic_ns()}" for i in range(count)]
        for name in names:
            asyncio.run(_push_image(source.url, name, "v1", sync_size, bench.fresh))
        ours = _sync_seconds(source, names, bench.emulator.url, bench.work)
        theirs = _skopeo_sync_seconds(source, names, bench.reference, bench.work)
    finally:
        gateway.stop()
        source.stop()
    bench.raw["pull_through"] = {"cold": cold, "warm": warm, "direct": direct,
                                 "sync": ours, "skopeo_sync": theirs}
    best = min(direct)
    size_text = f"{image // MiB} MiB"
    rows = [
        Row("pullthrough_cold", f"pull-through cold pull {size_text} ÷ direct from upstream",
            "≤ 1.3", f"{min(cold) / best:.2f} ({min(cold):.2f} s vs {best:.2f} s)",
            value=min(cold) / best, bound=1.3, gateway=min(cold), reference=best, unit="s"),
        Row("pullthrough_warm", f"pull-through warm pull {size_text} ÷ direct from upstream",
            "≤ 1.0", f"{min(warm) / best:.2f} ({min(warm):.2f} s vs {best:.2f} s)",
            value=min(warm) / best, bound=1.0, gateway=min(warm), reference=best, unit="s"),
        Row("sync_throughput", f"ecr-gateway sync of {count} images ÷ skopeo sync "
            "(throughput)", "≥ 0.8", f"{theirs / ours:.2f} ({ours:.1f} s vs {theirs:.1f} s)",
            value=theirs / ours, bound=0.8, better="higher", gateway=ours, reference=theirs,
            unit="s"),
    ]
    return rows
