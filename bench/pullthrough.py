"""Pull-through and ``ecr-gateway sync`` rows: a second distribution stands in for Docker
Hub (the source), the first (the reference) and the emulator are the stores.

* cold: one mirror client (aiohttp, digests checked, bytes discarded) pulls a fresh image
  through a gateway whose mirror fills ECR from the source (configured as the README's
  node-local mirror: proxy mode with a blob cache), ÷ the same client pulling it from the
  source directly; warm: the same pull again once ECR holds it (the gateway counted the
  fill) ÷ direct, with the ECR calls and downloads the warm pulls made (the emulator's
  request log). Information: the same warm pull through a second gateway in redirect mode
  that did not fill the image (the client downloads from ECR's URLs).
  Each round pulls directly before its cold pull and after its warm one; each row takes the
  best of its own rounds on both sides (as many pulls each).
  Information: how long the fill took after the cold pull, and the CPU
  the gateway spent on the cold pull against the client's and the source's.
* sync: ``ecr-gateway sync`` of N fresh images from the source into ECR ÷ ``skopeo sync`` of
  the same images into the reference registry, as throughput (higher is better).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from bench import ocihttp
from bench.images import FreshBytes
from bench.report import Row
from bench.services import Gateway, ReferenceRegistry, cpu_seconds
from gateway.disk.direct_io import balloon_reports_free_pages
from gateway.pullthrough.spooler import SpoolFile
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


def _cpu_text(cpu: dict[str, list[float]], direct_seconds: float | None = None,
              cpus: int = 2) -> str:
    """Medians: the gateway's CPU on the cold pull beside the client's and the source's, and
    the direct pull's; on a CPU-bound machine the cold ÷ direct time tends to their sums'
    ratio. With the direct pull's time: what the 1.3 target leaves the gateway on ``cpus``
    CPUs (all of them busy for 1.3 times that, less the client's and the source's CPU),
    against the passes no pull-through avoids."""
    mid = {key: sorted(values)[len(values) // 2] for key, values in cpu.items()}
    cold = mid["gateway"] + mid["client"] + mid["source"]
    direct = mid["direct_client"] + mid["direct_source"]
    floor = mid["floor"] + mid["client"] + mid["source"]
    text = (f"gateway {mid['gateway']:.2f} + client {mid['client']:.2f} + source "
            f"{mid['source']:.2f} vs direct {direct:.2f} (client + source)")
    if direct <= 0:  # a pull shorter than /proc's clock tick (small sizes): no ratio to give
        return text + f"; the gateway's floor for the same bytes: {mid['floor']:.2f}"
    text += (f": {cold / direct:.2f}x the CPU; with the gateway at its floor (hash "
             f"{mid.get('floor_hash', 0.0):.2f}, spool write {mid.get('floor_write', 0.0):.2f}, "
             f"loopback pass {mid.get('floor_pass', 0.0):.2f} of the same bytes: "
             f"{mid['floor']:.2f}) {floor / direct:.2f}x")
    if direct_seconds is not None:
        allowed = cpus * 1.3 * direct_seconds - mid["client"] - mid["source"]
        text += (f"; the 1.3 target leaves the gateway {allowed:.2f} CPU-s ({cpus} CPUs * 1.3 * "
                 f"{direct_seconds:.2f} s, less the client's and the source's)")
    return text


def _floor_cpu(size: int, fresh: FreshBytes, work: Path) -> dict[str, float]:
    """CPU-s of the work no pull-through of ``size`` bytes avoids, done in this process, pass
    by pass: hash them (the digest is checked before the last byte goes out), write them once
    (the spool ECR's copy reads) and pass them through a loopback socket pair (received from
    the upstream, sent to the client)."""
    chunks = list(fresh.chunks(16 * MiB, MiB))
    count = size // MiB
    started = _process_cpu()
    hasher = hashlib.sha256()
    for i in range(count):
        hasher.update(chunks[i % len(chunks)])
    hashed = _process_cpu()
    _write_spool(work, [chunks[i % len(chunks)] for i in range(count)])
    written = _process_cpu()
    ours, theirs = socket.socketpair()

    def drain() -> None:
        left = count * MiB
        while left > 0:
            left -= len(theirs.recv(256 * 1024))

    reader = threading.Thread(target=drain)
    reader.start()
    for i in range(count):
        ours.sendall(chunks[i % len(chunks)])
    reader.join()
    ours.close()
    theirs.close()
    passed = _process_cpu()
    return {"floor_hash": hashed - started, "floor_write": written - hashed,
            "floor_pass": passed - written, "floor": passed - started}


def _write_spool(work: Path, chunks: list[bytes]) -> None:
    """Write the chunks once into an unnamed file as the tee spools them (its SpoolFile):
    past the page cache where the gateway would (``blobs.direct_io: auto``)."""
    with tempfile.TemporaryFile(dir=work, buffering=0) as spool:
        file = SpoolFile(spool.fileno(), balloon_reports_free_pages())
        try:
            for chunk in chunks:
                file.write(chunk)
            file.finish()
        finally:
            file.close()


def _calls_text(calls: Counter[str]) -> str:
    return ", ".join(f"{action} {n}" for action, n in sorted(calls.items())) or "none"


def _fills(gateway: Gateway) -> float:
    """The fills the gateway completed (its metrics)."""
    with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=30) as response:
        text = response.read().decode()
    line = 'ecr_gateway_pullthrough_events_total{event="filled",registry="docker.io"} '
    return sum(float(row.removeprefix(line)) for row in text.splitlines()
               if row.startswith(line))


def _until_filled(gateway: Gateway, before: float, timeout: float = 600.0) -> float:
    """Seconds until the gateway counts one more fill (ECR holds the image)."""
    started = time.monotonic()
    while _fills(gateway) <= before:
        if time.monotonic() - started > timeout:
            raise RuntimeError("the pull-through fill did not complete")
        time.sleep(0.05)
    return time.monotonic() - started


def _process_cpu() -> float:
    usage = os.times()
    return usage.user + usage.system


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
    mirrors = {"docker.io": {"repository_prefix": "pt", "upstream": {"url": source.url}}}
    # The node-local mirror as the README configures it: proxy mode with a blob cache.
    gateway = Gateway(bench.work / "gw-pullthrough", {
        "log_level": "info", "mirrors": mirrors,
        "blobs": {"mode": "proxy", "cache": {"path": str(bench.work / "gw-pullthrough-cache")}}},
        bench.emulator.url)
    # A shared endpoint in redirect mode on the same ECR repositories, which did not fill the
    # image itself: its warm pulls ask ECR, and the client downloads from ECR's URLs.
    redirecting = Gateway(bench.work / "gw-pullthrough-redirect",
                          {"log_level": "info", "mirrors": mirrors}, bench.emulator.url)
    gateway.start()
    redirecting.start()
    try:
        # The gateway's own first requests (ECR clients, credentials) are not the fill's
        # cost: one untimed pull of another image first, as on a gateway that has run a while.
        warmup = f"library/warmup-{time.monotonic_ns()}"
        asyncio.run(_push_image(source.url, warmup, "v1", MiB, bench.fresh))
        asyncio.run(_pull(gateway.url, warmup, "v1", NS))
        asyncio.run(_pull(redirecting.url, warmup, "v1", NS))
        cold, warm, fill, redirected = [], [], [], []
        # Direct pulls, as many as each row's own: just before each cold pull, just after
        # each warm one.
        before: list[float] = []
        after: list[float] = []
        warm_calls: Counter[str] = Counter()  # ECR calls of the warm pulls (downloads too)
        redirected_calls: Counter[str] = Counter()
        cpu: dict[str, list[float]] = {"gateway": [], "client": [], "source": [],
                                       "direct_client": [], "direct_source": []}
        for round_ in range(sizes.rounds):
            repo = f"library/pt{round_}-{time.monotonic_ns()}"
            asyncio.run(_push_image(source.url, repo, "v1", image, bench.fresh))
            spent = _process_cpu(), cpu_seconds(source.pid)
            before.append(asyncio.run(_pull(source.url, repo, "v1", None)))
            cpu["direct_client"].append(_process_cpu() - spent[0])
            cpu["direct_source"].append(cpu_seconds(source.pid) - spent[1])
            filled = _fills(gateway)
            at = _process_cpu(), cpu_seconds(source.pid), cpu_seconds(gateway.pid)
            cold.append(asyncio.run(_pull(gateway.url, repo, "v1", NS)))
            cpu["client"].append(_process_cpu() - at[0])
            cpu["source"].append(cpu_seconds(source.pid) - at[1])
            cpu["gateway"].append(cpu_seconds(gateway.pid) - at[2])
            # Warm means ECR holds the image: the copy into ECR (which goes on after the cold
            # pull) is over, and competes with neither the warm pull nor the next direct one.
            fill.append(_until_filled(gateway, filled))
            bench.emulator.clear_requests()
            warm.append(asyncio.run(_pull(gateway.url, repo, "v1", NS)))
            warm_calls.update(r["action"] for r in bench.emulator.requests())
            bench.emulator.clear_requests()
            redirected.append(asyncio.run(_pull(redirecting.url, repo, "v1", NS)))
            redirected_calls.update(r["action"] for r in bench.emulator.requests())
            after.append(asyncio.run(_pull(source.url, repo, "v1", None)))
        for key, value in _floor_cpu(image, bench.fresh, bench.work).items():
            cpu[key] = [value]
        names = [f"library/sync{i}-{time.monotonic_ns()}" for i in range(count)]
        for name in names:
            asyncio.run(_push_image(source.url, name, "v1", sync_size, bench.fresh))
        ours = _sync_seconds(source, names, bench.emulator.url, bench.work)
        theirs = _skopeo_sync_seconds(source, names, bench.reference, bench.work)
    finally:
        gateway.stop()
        redirecting.stop()
        source.stop()
    bench.raw["pull_through"] = {"cold": cold, "warm": warm, "warm_redirect": redirected,
                                 "direct_before": before,
                                 "direct_after": after, "fill": fill, "cpu": cpu, "sync": ours,
                                 "skopeo_sync": theirs}
    cold_reference, warm_reference = min(before), min(after)
    size_text = f"{image // MiB} MiB"
    rows = [
        Row("pullthrough_cold", f"pull-through cold pull {size_text} ÷ direct from upstream",
            "≤ 1.3", f"{min(cold) / cold_reference:.2f} ({min(cold):.2f} s vs "
            f"{cold_reference:.2f} s)", value=min(cold) / cold_reference, bound=1.3,
            gateway=min(cold), reference=cold_reference, unit="s"),
        Row("pullthrough_warm", f"pull-through warm pull {size_text} ÷ direct from upstream "
            "(node-local mirror: proxy mode, blob cache)",
            "≤ 1.0", f"{min(warm) / warm_reference:.2f} ({min(warm):.2f} s vs "
            f"{warm_reference:.2f} s); ECR calls and downloads in {len(warm)} warm pulls: "
            f"{_calls_text(warm_calls)}", value=min(warm) / warm_reference, bound=1.0,
            gateway=min(warm), reference=warm_reference, unit="s"),
        Row("pullthrough_warm_redirect", f"pull-through warm pull {size_text} ÷ direct, "
            "through a redirect-mode gateway that did not fill it", "information",
            measured=f"{min(redirected) / warm_reference:.2f} ({min(redirected):.2f} s vs "
            f"{warm_reference:.2f} s); ECR calls and downloads in {len(redirected)} pulls: "
            f"{_calls_text(redirected_calls)}"),
        Row("pullthrough_fill", f"pull-through: the copy of {size_text} into ECR after the "
            "cold pull", "information", measured=f"{min(fill):.2f} s (median "
            f"{sorted(fill)[len(fill) // 2]:.2f} s) until ECR holds the image"),
        Row("pullthrough_cpu", f"pull-through cold pull {size_text}: CPU-s of each process",
            "information", measured=_cpu_text(cpu, cold_reference, os.cpu_count() or 1)),
        Row("sync_throughput", f"ecr-gateway sync of {count} images ÷ skopeo sync "
            "(throughput)", "≥ 0.8", f"{theirs / ours:.2f} ({ours:.1f} s vs {theirs:.1f} s)",
            value=theirs / ours, bound=0.8, better="higher", gateway=ours, reference=theirs,
            unit="s"),
    ]
    return rows
