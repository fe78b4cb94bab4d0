"""``python -m bench``: every performance target of the gateway, side by side with the
reference registry, in one run.

Every judged figure is a ratio of two measurements taken in the same run (or a cost per GiB
of one process), because the machines this runs on are small and shared: absolute times are
reported but never judged. Timed comparisons run in rounds, the two sides one after the other
in each round, and the best of the rounds counts for each side.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import images, listings, load, ocihttp, pushfloor, report
from bench.images import FreshBytes, MiB, OciImage
from bench.report import Row
from bench.services import (
    EmulatorProcess,
    Gateway,
    ReferenceRegistry,
    children_cpu_seconds,
    cpu_seconds,
    peak_rss,
    reset_peak_rss,
    rss,
)

GiB = 1024 * MiB
SECTIONS = {"push_pull": "push and pull (skopeo)", "manifest_head": "manifest HEAD load",
            "memory": "memory", "concurrency": "concurrency", "economy": "upstream economy",
            "pull_through": "pull-through and sync from another registry",
            "listings": "listings (tags and catalog paging)",
            "growth": "cost as work grows (blob size, pushes at once)"}
RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Sizes:
    """What each profile moves; the targets scale with it where they depend on it."""

    name: str
    image: int  # the skopeo image's single layer
    rounds: int
    head_seconds: float
    memory_uploads: int
    memory_upload_size: int
    leak_pushes: int
    idle_sessions: int
    idle_bytes: int
    concurrent_pushes: int
    concurrent_size: int
    sequential: int
    economy_layers: tuple[int, ...]


FULL = Sizes("full", 512 * MiB, 3, 5.0, 32, 256 * MiB, 500, 100, 4 * MiB, 64, 16 * MiB, 4,
             (1 * MiB, 12 * MiB, 25 * MiB))
QUICK = Sizes("quick", 64 * MiB, 1, 2.0, 8, 32 * MiB, 60, 20, 4 * MiB, 16, 8 * MiB, 2,
              (1 * MiB, 12 * MiB))
SMOKE = Sizes("smoke", 2 * MiB, 1, 1.0, 2, 6 * MiB, 6, 2, 1 * MiB, 3, 1 * MiB, 1,
              (256 * 1024, 6 * MiB))


def part_size() -> int:
    """The partSize the emulator announces (the gateway cuts uploads into such parts)."""
    from ecr_emulator.settings import Settings

    return Settings.from_env().part_size


class Skopeo:
    def __init__(self, work: Path) -> None:
        self.binary = shutil.which("skopeo") or "skopeo"
        work.mkdir(parents=True, exist_ok=True)
        self.policy = work / "policy.json"
        self.policy.write_text('{"default":[{"type":"insecureAcceptAnything"}]}')
        auth = work / "auth.json"
        auth.write_text('{"auths":{}}')
        self.env = {**os.environ, "REGISTRY_AUTH_FILE": str(auth)}

    def copy(self, source: str, destination: str) -> float:
        """Seconds one ``skopeo copy`` takes."""
        started = time.monotonic()
        result = subprocess.run(
            [self.binary, "--policy", str(self.policy), "copy", "--quiet",
             "--src-tls-verify=false", "--dest-tls-verify=false", source, destination],
            env=self.env, capture_output=True, text=True, timeout=900, check=False)
        elapsed = time.monotonic() - started
        if result.returncode != 0:
            raise RuntimeError(f"skopeo copy {source} {destination} failed:\n{result.stderr}")
        return elapsed


class Bench:
    def __init__(self, sizes: Sizes, work: Path, log: Callable[[str], None]) -> None:
        self.sizes = sizes
        self.work = work
        self.log = log
        self.fresh = FreshBytes()
        self.part = part_size()
        self.rows: list[Row] = []
        self.raw: dict[str, Any] = {}
        self.skopeo = Skopeo(work / "skopeo")
        self.pulls = pull_folder(work, 3 * sizes.image)
        self.reference = ReferenceRegistry(work / "reference")
        self.emulator = EmulatorProcess(work / "emulator")
        # The same emulator leaving its writes to the page cache, as distribution does: what
        # the upstream's fsyncs cost the push (an information row).
        self.page_cache_emulator = EmulatorProcess(work / "emulator-page-cache",
                                                   env={"ECR_EMULATOR_DURABLE": "0"})
        self.page_cache: Gateway | None = None
        self.redirect: Gateway | None = None
        self.proxy: Gateway | None = None
        self.cached: Gateway | None = None
        self.embedded: Gateway | None = None
        self.containerd = False  # whether the ctr rows can run

    # -- setup ------------------------------------------------------------------------------

    def start(self) -> None:
        self.reference.start()
        self.emulator.start()
        self.page_cache_emulator.start()
        url = self.emulator.url
        # Default settings: the concurrency row's 64 pushes come from this one address and fit
        # the default per-client upload limit (limits.max_uploads_per_client, 128).
        quiet: dict[str, Any] = {"log_level": "info"}
        self.redirect = Gateway(self.work / "gw-redirect", {**quiet, "blobs": {"mode": "redirect"}},
                                url)
        self.proxy = Gateway(self.work / "gw-proxy", {**quiet, "blobs": {"mode": "proxy"}}, url)
        self.page_cache = Gateway(self.work / "gw-page-cache",
                                  {**quiet, "blobs": {"mode": "redirect"}},
                                  self.page_cache_emulator.url)
        gateways = [self.redirect, self.proxy, self.page_cache]
        if blob_cache_supported():
            self.cached = Gateway(self.work / "gw-cache", {**quiet, "blobs": {
                "mode": "proxy", "cache": {"path": str(self.work / "gw-cache" / "blobs")}}}, url)
            gateways.append(self.cached)
        self.embedded = Gateway(self.work / "gw-embedded", {**quiet})
        gateways.append(self.embedded)
        with ThreadPoolExecutor(len(gateways)) as pool:
            list(pool.map(lambda g: g.start(), gateways))
        self.containerd = containerd_available(self.log)

    def stop(self) -> None:
        for gateway in (self.redirect, self.proxy, self.cached, self.embedded, self.page_cache):
            if gateway is not None:
                gateway.stop()
        self.emulator.stop()
        self.page_cache_emulator.stop()
        self.reference.stop()
        if not self.pulls.is_relative_to(self.work):
            shutil.rmtree(self.pulls, ignore_errors=True)

    # -- rows -------------------------------------------------------------------------------

    def add(self, row: Row) -> None:
        row.profile = self.sizes.name
        self.rows.append(row.judge())
        self.log(f"  {row.title}: {row.measured} [{row.verdict}]")

    def push_pull(self) -> None:
        """Rows 1-4: skopeo push and pull of one single-layer image, in rounds."""
        assert self.redirect and self.proxy and self.embedded and self.page_cache
        size = self.sizes.image
        times: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        # Each push's CPU-s: (skopeo, the registry's processes), for the CPU-bound rows.
        whole: dict[str, list[tuple[float, float]]] = {}
        floors: list[pushfloor.PushFloor] = []

        def note(key: str, seconds: float) -> None:
            times.setdefault(key, []).append(seconds)

        for round_ in range(self.sizes.rounds):
            image = images.oci_image(self.work / f"image-{round_}", self.fresh, [size])
            gib = image.blob_bytes / GiB
            source = f"oci:{image.layout}:{image.tag}"
            repo = f"bench/push{round_}"
            self.log(f"round {round_ + 1}/{self.sizes.rounds}: {image.blob_bytes / MiB:.0f} MiB")
            skopeo_before, before = children_cpu_seconds(), cpu_seconds(self.reference.pid)
            note("push_ref", self.skopeo.copy(source, f"docker://{self.reference.host}/{repo}:v1"))
            whole.setdefault("push_ref", []).append(
                (children_cpu_seconds() - skopeo_before, cpu_seconds(self.reference.pid) - before))
            skopeo_before = children_cpu_seconds()
            before = cpu_seconds(self.redirect.pid)
            emulator_before = cpu_seconds(self.emulator.pid)
            self.emulator.clear_requests()
            note("push_gw", self.skopeo.copy(source, f"docker://{self.redirect.host}/{repo}:v1"))
            gateway_cpu = cpu_seconds(self.redirect.pid) - before
            emulator_cpu = cpu_seconds(self.emulator.pid) - emulator_before
            whole.setdefault("push_gw", []).append(
                (children_cpu_seconds() - skopeo_before, gateway_cpu + emulator_cpu))
            cpu.setdefault("push", []).append(gateway_cpu / gib)
            cpu.setdefault("push_emulator", []).append(emulator_cpu / gib)
            note("push_upstream_busy", sum(e.get("duration_ms", 0.0)
                                           for e in self.emulator.requests()) / 1000)
            # What the protocol requires of each side for the same bytes, in this process,
            # right after the push it bounds.
            floors.append(pushfloor.measure(image.blob_bytes, self.fresh, self.work))
            note("push_page_cache",
                 self.skopeo.copy(source, f"docker://{self.page_cache.host}/{repo}:v1"))
            embedded_pid = self.embedded.embedded_emulator_pid()
            before = cpu_seconds(embedded_pid) if embedded_pid else 0.0
            note("push_embedded",
                 self.skopeo.copy(source, f"docker://{self.embedded.host}/{repo}:v1"))
            if embedded_pid:
                cpu.setdefault("push_embedded_emulator", []).append(
                    (cpu_seconds(embedded_pid) - before) / gib)
            note("push_bare", self._bare(image, f"bench/bare{round_}"))
            if self.cached is not None:
                self._pull(self.cached, repo)  # fills the cache
            # Each side pulled twice per round, in turn, the order reversed the second time:
            # skopeo's own run-to-run spread is larger than the registries' differences.
            sides: list[tuple[str, ReferenceRegistry | Gateway]] = [
                ("pull_ref", self.reference), ("pull_redirect", self.redirect),
                ("pull_proxy", self.proxy)]
            if self.cached is not None:
                sides.append(("pull_cache", self.cached))
            for order in (sides, sides[::-1]):
                for key, registry in order:
                    before = cpu_seconds(self.redirect.pid)
                    note(key, self._pull(registry, repo))
                    if key == "pull_redirect":
                        cpu.setdefault("pull", []).append(
                            (cpu_seconds(self.redirect.pid) - before) / gib)
            if self.containerd:
                # What nodes use: containerd's fetch, each side in turn, the order reversed.
                fetched: list[tuple[str, ReferenceRegistry | Gateway]] = [
                    ("fetch_ref", self.reference), ("fetch_redirect", self.redirect)]
                if self.cached is not None:
                    fetched.append(("fetch_cache", self.cached))
                for order in (fetched, fetched[::-1]):
                    for key, registry in order:
                        note(key, self._ctr_fetch(registry, repo))
            if round_ == self.sizes.rounds - 1:
                self.raw["blob_get"] = {key: self._blob_get(registry, repo,
                                                            image.layers[0].digest)
                                        for key, registry in sides}
            if round_ == self.sizes.rounds - 1:
                copy = self.pulls / "local-copy"
                note("skopeo_floor", self.skopeo.copy(source, f"oci:{copy}:v1"))
                shutil.rmtree(copy, ignore_errors=True)
            shutil.rmtree(image.layout, ignore_errors=True)
        best = {key: min(values) for key, values in times.items()}
        gateway_floor = min((f.gateway for f in floors), key=lambda f: f.total)
        emulator_floor = min((f.emulator for f in floors), key=lambda f: f.total)
        self.raw["push_pull"] = {"seconds": times, "cpu_per_gib": cpu, "image_bytes": size,
                                 "push_cpu_seconds": whole,
                                 "floor_cpu_per_gib": [{"gateway": f.gateway.passes,
                                                        "emulator": f.emulator.passes}
                                                       for f in floors]}
        mib = f"{size / MiB:.0f} MiB"

        def timed(key: str, title: str, short: str, gw_key: str, ref_key: str,
                  bound: float | None, measured_extra: str = "") -> None:
            """A ratio row; ``bound`` None: information (skopeo's pulls, where ctr's are
            judged: containerd is what nodes pull with)."""
            ratio = best[gw_key] / best[ref_key]
            target = f"≤ {bound:g}" if bound is not None else "information"
            self.add(Row(key, title, target, value=ratio, bound=bound,
                         measured=f"{ratio:.2f} ({best[gw_key]:.2f} s vs {best[ref_key]:.2f} s)"
                         + measured_extra,
                         gateway=best[gw_key], reference=best[ref_key], unit="s", panel="time",
                         extra={"short": short}))

        timed("push", f"push {mib} (skopeo), gateway+emulator ÷ distribution", "push",
              "push_gw", "push_ref", 1.1)
        emulator_pid = self.embedded.embedded_emulator_pid()
        timed("push_embedded", f"push {mib}, embedded `serve` ÷ distribution",
              "push (embedded serve)", "push_embedded", "push_ref", 1.0,
              f"; emulator in its own process: {'yes' if emulator_pid else 'NO'}")
        timed("pull_redirect", f"pull {mib} (skopeo), redirect mode ÷ distribution",
              "pull redirect", "pull_redirect", "pull_ref", None)
        timed("pull_proxy", f"pull {mib} (skopeo), proxy mode ÷ distribution", "pull proxy",
              "pull_proxy", "pull_ref", None)
        if self.cached is not None:
            timed("pull_cache", f"pull {mib} (skopeo), proxy + warm blob cache ÷ distribution",
                  "pull proxy+cache", "pull_cache", "pull_ref", None)
        else:
            self.add(Row("pull_cache", f"pull {mib} (skopeo), proxy + warm blob cache ÷ "
                         "distribution", "information", measured="n/a (cache not available)"))
        if "fetch_ref" in best:
            timed("fetch_redirect", f"`ctr content fetch` {mib}, redirect mode ÷ distribution",
                  "ctr fetch redirect", "fetch_redirect", "fetch_ref", 1.0)
        else:
            self.add(Row("fetch_redirect", f"`ctr content fetch` {mib}, redirect mode ÷ "
                         "distribution", "≤ 1", measured="n/a (containerd not available)"))
        if "fetch_cache" in best:
            timed("fetch_cache", f"`ctr content fetch` {mib}, proxy + warm blob cache ÷ "
                  "distribution", "ctr fetch proxy+cache", "fetch_cache", "fetch_ref", 0.8)
        else:
            self.add(Row("fetch_cache", f"`ctr content fetch` {mib}, proxy + warm blob cache ÷ "
                         "distribution", "≤ 0.8",
                         measured="n/a (containerd or the blob cache not available)"))
        push_cpu = min(cpu["push"])
        self.add(Row("push_cpu", "gateway CPU-s per GiB pushed", "≤ 2", value=push_cpu,
                     bound=2.0, measured=f"{push_cpu:.2f} (floor {gateway_floor.total:.2f})",
                     extra={"short": "push CPU-s/GiB"}))
        self.add(floor_row("push_cpu_floor", "gateway floor: the passes over the bytes a push "
                           "requires of it, done once in the bench process", gateway_floor, 2.0))
        emulator_cpu = min(cpu["push_emulator"])
        embedded_cpu = min(cpu.get("push_embedded_emulator") or [math.nan])
        self.add(Row("push_emulator_cpu", "emulator CPU-s per GiB received (the gateway's "
                     "push; SigV4 verified)", "≤ 1.5", value=emulator_cpu, bound=1.5,
                     measured=f"{emulator_cpu:.2f} (floor {emulator_floor.total:.2f}; embedded "
                              f"`serve`'s emulator: {embedded_cpu:.2f})",
                     extra={"short": "emulator CPU-s/GiB"}))
        self.add(floor_row("push_emulator_cpu_floor", "emulator floor: the passes over the "
                           "bytes a push requires of it, done once in the bench process",
                           emulator_floor, 1.5))
        pull_cpu = min(cpu["pull"])
        self.add(Row("pull_cpu", "gateway CPU-s per GiB pulled, redirect mode", "≤ 0.05",
                     value=pull_cpu, bound=0.05, measured=f"{pull_cpu:.3f}",
                     extra={"short": "redirect pull CPU-s/GiB"}))
        fastest = times["push_gw"].index(best["push_gw"])
        busy = times["push_upstream_busy"][fastest]
        self.add(Row("push_upstream", "share of the gateway push spent inside the emulator's "
                     "ECR calls", "information", measured=f"{busy / best['push_gw']:.0%} "
                     f"({busy:.2f} s of {best['push_gw']:.2f} s, from its request log)"))
        self.add(push_cpu_row(times, whole))
        timed("push_page_cache", f"push {mib} with an emulator that does not fsync "
              "(as distribution does not) ÷ distribution", "push (emulator without fsync)",
              "push_page_cache", "push_ref", 0.9)
        fresh, cached = page_cache_write_cost(self.work / "page-cache-probe", size)
        self.add(Row("page_cache_write", "kernel CPU-s per GiB writing a new file (what a "
                     "staging copy through the page cache pays) vs overwriting cached pages",
                     "information",
                     measured=f"{fresh:.2f} vs {cached:.2f}"))
        reads = self.raw["blob_get"]
        self.add(Row("blob_get", f"the {mib} layer read by curl, no client work: "
                     "distribution / redirect / proxy / proxy+cache", "information",
                     measured=" / ".join("n/a" if reads.get(key) is None else
                                         f"{reads[key]:.2f} s" for key in (
                                             "pull_ref", "pull_redirect", "pull_proxy",
                                             "pull_cache"))))
        self.add(Row("skopeo_floor", f"skopeo copying the {mib} image oci→oci, no registry",
                     "information", measured=f"{best['skopeo_floor']:.2f} s = "
                     f"{best['skopeo_floor'] / best['pull_ref']:.2f} of the distribution pull"))
        ratio = best["push_gw"] / best["push_bare"]
        self.add(Row("bare", "push via gateway ÷ bare aiobotocore upload to the emulator",
                     "≤ 1.1", value=ratio, bound=1.1,
                     measured=f"{ratio:.2f} ({best['push_gw']:.2f} s vs "
                              f"{best['push_bare']:.2f} s, {self.part // MiB} MiB parts)",
                     extra={"short": "gateway ÷ bare ECR API"}))

    def _bare(self, image: OciImage, repo: str) -> float:
        layer = image.layers[0]
        out = subprocess.run(
            [sys.executable, "-m", "bench.bare", str(image.blob_path(layer.digest)),
             "--endpoint", self.emulator.url, "--repository", repo, "--digest", layer.digest],
            capture_output=True, text=True, timeout=900, check=True,
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, **self.emulator.aws_env("AKIDBENCHBARE")})
        seconds: float = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
        return seconds

    def _blob_get(self, registry: ReferenceRegistry | Gateway, repo: str,
                  digest: str) -> float | None:
        """Best of three reads of the layer by curl into /dev/null, redirects followed: the
        registry's side of a pull without the client's work (hashing, writing)."""
        curl = shutil.which("curl")
        if curl is None:
            return None
        best = math.inf
        for _ in range(3):
            started = time.monotonic()
            subprocess.run([curl, "-sfL", "-o", "/dev/null", f"{registry.url}/v2/{repo}/blobs/"
                            f"{digest}"], check=True, timeout=600)
            best = min(best, time.monotonic() - started)
        return best

    def _pull(self, registry: ReferenceRegistry | Gateway, repo: str) -> float:
        out = self.pulls / f"pulled-{time.monotonic_ns()}"
        try:
            return self.skopeo.copy(f"docker://{registry.host}/{repo}:v1", f"oci:{out}:v1")
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def _ctr_fetch(self, registry: ReferenceRegistry | Gateway, repo: str) -> float:
        """``ctr content fetch`` of the image (manifest, config, layer into containerd's
        content store, each digest checked) by a containerd of its own, started before the
        clock: a store that held the blobs once, even deleted, fetches nothing again (its
        files stay until containerd's garbage collection)."""
        from tests.support.clients import Containerd

        node = Containerd().start()
        try:
            url = f"http://{registry.host}"  # plain HTTP, pulled and resolved from itself
            node.mirror(registry.host, url, url)
            started = time.perf_counter()
            node.ctr("content", "fetch", "--hosts-dir", str(node.hosts_dir),
                     f"{registry.host}/{repo}:v1", timeout=900)
            return time.perf_counter() - started
        finally:
            node.stop()

    def manifest_head(self) -> None:
        """Row 5: manifest HEAD by digest and by tag, 64 concurrent clients."""
        assert self.redirect
        image = images.oci_image(self.work / "head-image", self.fresh, [64 * 1024])
        source = f"oci:{image.layout}:{image.tag}"
        for registry in (self.reference, self.redirect):
            self.skopeo.copy(source, f"docker://{registry.host}/bench/head:v1")
        results: dict[str, dict[str, Any]] = {}
        for ref_kind, ref in (("digest", image.manifest.digest), ("tag", "v1")):
            for side, registry in (("reference", self.reference), ("gateway", self.redirect)):
                url = f"{registry.url}/v2/bench/head/manifests/{ref}"
                _warm(url)
                result = load.head_load(url, self.sizes.head_seconds)
                if result.ok != result.requests:
                    raise RuntimeError(f"HEAD {url}: {result.requests - result.ok} failed")
                results[f"{side}_{ref_kind}"] = result.as_dict()
            gw, rf = results[f"gateway_{ref_kind}"], results[f"reference_{ref_kind}"]
            ratio = gw["rps"] / rf["rps"] if rf["rps"] else 0.0
            tool = gw["tool"]
            self.add(Row(f"head_{ref_kind}_rps",
                         f"manifest HEAD by {ref_kind} ({tool} -c 64), req/s gateway ÷ "
                         "distribution", "≥ 1.5", value=ratio, bound=1.5, better="higher",
                         measured=f"{ratio:.2f} ({gw['rps']:.0f} vs {rf['rps']:.0f} req/s)",
                         gateway=gw["rps"], reference=rf["rps"], unit="req/s", panel="head",
                         extra={"short": f"HEAD by {ref_kind}"}))
            self.add(Row(f"head_{ref_kind}_p99", f"manifest HEAD by {ref_kind}, p99 latency",
                         "lower than distribution's", value=gw["p99_ms"], bound=rf["p99_ms"],
                         measured=f"{gw['p99_ms']:.1f} ms vs {rf['p99_ms']:.1f} ms",
                         extra={"short": f"HEAD p99 by {ref_kind} (ms)"}))
        self.raw["manifest_head"] = results
        shutil.rmtree(image.layout, ignore_errors=True)

    def memory(self) -> None:
        """Row 6: peak RSS under concurrent uploads, no growth over many pushes, idle
        sessions that hold nothing."""
        assert self.redirect
        gateway = self.redirect
        pid = gateway.pid
        sizes = self.sizes
        count, size = sizes.memory_uploads, sizes.memory_upload_size
        base = list(self.fresh.chunks(size - 64, 1 * MiB))
        base_hash = images.hashlib.sha256()
        for chunk in base:
            base_hash.update(chunk)

        async def concurrent_uploads() -> float:
            async with ocihttp.session(count * 2) as http:
                async def one(index: int) -> None:
                    tail = os.urandom(64)
                    digest = base_hash.copy()
                    digest.update(tail)
                    await ocihttp.push_blob(http, gateway.url, f"bench/mem{index % 4}",
                                            _with_tail(base, tail), size,
                                            "sha256:" + digest.hexdigest())

                started = time.monotonic()
                await asyncio.gather(*(one(i) for i in range(count)))
                return time.monotonic() - started

        rss_before = rss(pid)
        reset_ok = reset_peak_rss(pid)
        seconds = asyncio.run(concurrent_uploads())
        peak = peak_rss(pid)
        bound = 2 * count * self.part + 150 * MiB
        self.add(Row("memory_peak", f"gateway peak RSS, {count} concurrent "
                     f"{size // MiB} MiB uploads", f"≤ 2x({count}x{self.part // MiB} MiB)"
                     f"+150 MiB = {bound // MiB} MiB", value=peak / MiB, bound=bound / MiB,
                     measured=f"{peak / MiB:.0f} MiB (before: {rss_before / MiB:.0f} MiB; "
                              f"{count * size / MiB / seconds:.0f} MiB/s)"
                              + ("" if reset_ok else "; peak not reset: lifetime peak"),
                     extra={"short": "peak RSS (MiB)"}))
        base.clear()

        leak_n = sizes.leak_pushes
        warm = max(1, leak_n // 10)
        samples: list[tuple[int, int]] = []

        async def sequential_pushes() -> None:
            async with ocihttp.session(4) as http:
                for index in range(leak_n):
                    repo = f"bench/leak{index % 8}"
                    layer = await ocihttp.push_bytes(http, gateway.url, repo,
                                                     self.fresh.data(256 * 1024))
                    config = await ocihttp.push_bytes(http, gateway.url, repo,
                                                      json.dumps({"n": index}).encode())
                    await ocihttp.put_manifest(http, gateway.url, repo, f"t{index}", config,
                                               [layer])
                    if index + 1 == warm or (index + 1) % max(1, leak_n // 10) == 0:
                        samples.append((index + 1, rss(pid)))

        asyncio.run(sequential_pushes())
        first = dict(samples)[warm]
        last = samples[-1][1]
        drift = (last - first) / first
        self.add(Row("memory_flat", f"gateway RSS across {leak_n} sequential pushes",
                     "flat: within ±10%", value=abs(drift) * 100, bound=10.0,
                     measured=f"{drift * 100:+.1f}% ({first / MiB:.0f} → {last / MiB:.0f} MiB "
                              f"from push {warm} to {leak_n})",
                     extra={"short": "RSS drift over pushes (%)"}))
        self.raw["memory"] = {"peak_bytes": peak, "rss_before": rss_before,
                              "samples": samples, "upload_seconds": seconds}

        sessions, parked = sizes.idle_sessions, sizes.idle_bytes

        async def idle() -> tuple[int, int]:
            async with ocihttp.session(16) as http:
                before = rss(pid)
                locations = []
                for index in range(sessions):
                    location = await ocihttp.start_upload(http, gateway.url,
                                                          f"bench/idle{index % 4}")
                    locations.append(await ocihttp.patch(http, gateway.url, location,
                                                         self.fresh.data(parked), parked))
                await asyncio.sleep(0.5)
                after = rss(pid)
                for location in locations:
                    async with http.delete(location):
                        pass
                return before, after

        before, after = asyncio.run(idle())
        growth = max(0, after - before)
        per_session = growth / sessions
        self.add(Row("memory_idle", f"RAM held by {sessions} idle upload sessions "
                     f"({parked // MiB} MiB received each)", "≤ 64 KiB per session",
                     value=per_session / 1024, bound=64.0,
                     measured=f"{per_session / 1024:.0f} KiB per session "
                              f"({growth / MiB:.1f} MiB for {sessions * parked / MiB:.0f} MiB "
                              "parked)",
                     extra={"short": "idle session RAM (KiB)"}))
        self.raw["memory"]["idle"] = {"before": before, "after": after}

    def concurrency(self) -> None:
        """Row 7: many concurrent pushes and pulls all succeed, and do not collapse."""
        assert self.redirect
        url = self.redirect.url
        many, size, single = (self.sizes.concurrent_pushes, self.sizes.concurrent_size,
                              self.sizes.sequential)
        base = list(self.fresh.chunks(size - 64, 1 * MiB))
        base_hash = images.hashlib.sha256()
        for chunk in base:
            base_hash.update(chunk)
        repo = "bench/concurrent"

        errors: list[str] = []

        async def run() -> dict[str, Any]:
            pushed: list[ocihttp.Pushed] = []

            async def push_one(http: Any) -> bool:
                tail = os.urandom(64)
                digest = base_hash.copy()
                digest.update(tail)
                try:
                    pushed.append(await ocihttp.push_blob(
                        http, url, repo, _with_tail(base, tail), size,
                        "sha256:" + digest.hexdigest()))
                    return True
                except (TimeoutError, ocihttp.PushError, OSError) as exc:
                    errors.append(f"push: {type(exc).__name__}: {exc}"[:300])
                    return False

            async with ocihttp.session(many * 2) as http:
                started = time.monotonic()
                for _ in range(single):
                    await push_one(http)
                one_push = time.monotonic() - started
                started = time.monotonic()
                ok = sum(await asyncio.gather(*(push_one(http) for _ in range(many))))
                many_push = time.monotonic() - started
                config = await ocihttp.push_bytes(http, url, repo, b'{"bench":"concurrency"}')
                await ocihttp.put_manifest(http, url, repo, "all", config, pushed)

                async def pull_one(blob: ocihttp.Pushed) -> bool:
                    try:
                        return await ocihttp.pull_blob(http, url, repo, blob.digest) == blob.size
                    except (TimeoutError, ocihttp.PushError, OSError) as exc:
                        errors.append(f"pull: {type(exc).__name__}: {exc}"[:300])
                        return False

                started = time.monotonic()
                for blob in pushed[:single]:
                    await pull_one(blob)
                one_pull = time.monotonic() - started
                started = time.monotonic()
                pulled = sum(await asyncio.gather(*(pull_one(b) for b in pushed[-many:])))
                many_pull = time.monotonic() - started
            return {"pushed_ok": ok, "pulled_ok": pulled, "pulled_of": len(pushed[-many:]),
                    "push_1": single * size / MiB / one_push,
                    "push_n": many * size / MiB / many_push,
                    "pull_1": single * size / MiB / one_pull,
                    "pull_n": many * size / MiB / many_pull}

        result = asyncio.run(run())
        result["errors"] = errors[:20]
        self.raw["concurrency"] = result
        for error in errors[:3]:
            self.log(f"  error: {error}")
        mib = f"{size // MiB} MiB"
        self.add(Row("concurrent_push_ok", f"{many} concurrent pushes of distinct {mib} layers",
                     f"all {many} succeed", value=float(result["pushed_ok"]), bound=float(many),
                     better="higher", measured=f"{result['pushed_ok']}/{many}",
                     extra={"short": "concurrent pushes ok", "check": True}))
        ratio = result["push_n"] / result["push_1"]
        self.add(Row("concurrent_push_tput", f"push throughput, {many} concurrent ÷ 1 at a time",
                     "≥ 1", value=ratio, bound=1.0, better="higher",
                     measured=f"{ratio:.2f} ({result['push_n']:.0f} vs "
                              f"{result['push_1']:.0f} MiB/s)",
                     extra={"short": f"push MiB/s {many} ÷ 1"}))
        self.add(Row("concurrent_pull_ok", f"{many} concurrent pulls (redirect), digests checked",
                     f"all {many} succeed", value=float(result["pulled_ok"]), bound=float(many),
                     better="higher", measured=f"{result['pulled_ok']}/{result['pulled_of']}",
                     extra={"short": "concurrent pulls ok", "check": True}))
        ratio = result["pull_n"] / result["pull_1"]
        self.add(Row("concurrent_pull_tput", f"pull throughput, {many} concurrent ÷ 1 at a time",
                     "≥ 1", value=ratio, bound=1.0, better="higher",
                     measured=f"{ratio:.2f} ({result['pull_n']:.0f} vs "
                              f"{result['pull_1']:.0f} MiB/s)",
                     extra={"short": f"pull MiB/s {many} ÷ 1"}))

    def pull_through(self) -> None:
        """Cold and warm pulls through the pull-through, and sync, vs the upstream itself."""
        from bench import pullthrough

        for row in pullthrough.run(self):
            self.add(row)

    def listings(self) -> None:
        """Paging through many tags and a large catalog (bench/listings.py)."""
        rows, self.raw["listings"] = listings.run(self.work, self.sizes.name, self.log)
        for row in rows:
            self.add(row)

    def growth(self) -> None:
        """Seconds and peak RSS as one blob grows, and as pushes at once grow."""
        from bench import growth

        for row in growth.run(self):
            self.add(row)

    def economy(self, client: str) -> None:
        """Row 8: the ECR calls of a push, from the emulator's request log."""
        assert self.redirect
        host = self.redirect.host
        layers = list(self.sizes.economy_layers)
        repo = "bench/economy"
        asyncio.run(_create_repository(self.emulator.url, repo))
        pusher = _DockerPusher(self.work / "docker") if client == "docker" else None
        try:
            if pusher is not None:
                archive = images.docker_archive(self.work / "economy.tar", self.fresh, layers,
                                                "bench/economy:v1")
                pusher.load(archive)

                def push() -> None:
                    pusher.push("bench/economy:v1", f"{host}/{repo}:v1")
            else:
                image = images.oci_image(self.work / "economy-image", self.fresh, layers)

                def push() -> None:
                    self.skopeo.copy(f"oci:{image.layout}:v1", f"docker://{host}/{repo}:v1")

            self.emulator.clear_requests()
            push()
            first = Counter(e["action"] for e in self.emulator.requests())
            self.emulator.clear_requests()
            push()
            second = Counter(e["action"] for e in self.emulator.requests())
        finally:
            if pusher is not None:
                pusher.stop()
        blobs = asyncio.run(_manifest_blob_sizes(self.redirect.url, repo, "v1"))
        parts = sum(max(1, math.ceil(size / self.part)) for size in blobs)
        expected = {"InitiateLayerUpload": len(blobs), "UploadLayerPart": parts,
                    "CompleteLayerUpload": len(blobs), "PutImage": 1}
        checks = first.get("BatchCheckLayerAvailability", 0)
        others = {k: v for k, v in first.items()
                  if k not in expected and k != "BatchCheckLayerAvailability"}
        exact = all(first.get(k, 0) == v for k, v in expected.items())
        good = exact and checks <= len(blobs) and not others
        calls = ", ".join(f"{_SHORT.get(k, k)} {v}" for k, v in sorted(first.items()))
        self.add(Row("economy_push", f"ECR calls of a {client} push of a new "
                     f"{len(layers)}-layer image ({len(blobs)} blobs)",
                     "per blob ≤1 Check, 1 Initiate, ⌈size/part⌉ parts, 1 Complete; "
                     "1 PutImage", value=1.0 if good else 0.0, bound=1.0, better="higher",
                     measured=calls + (f"; expected parts {parts}" if not exact else ""),
                     extra={"short": "push ECR calls exact", "check": True}))
        uploads = sum(second.get(k, 0) for k in ("InitiateLayerUpload", "UploadLayerPart",
                                                  "CompleteLayerUpload"))
        repeated = ", ".join(f"{_SHORT.get(k, k)} {v}" for k, v in sorted(second.items()))
        self.add(Row("economy_repush", f"layer uploads of a repeated {client} push", "0",
                     value=float(uploads), bound=0.0, measured=f"{uploads} ({repeated})",
                     extra={"short": "repeated push uploads", "check": True}))
        self.raw["economy"] = {"client": client, "first": dict(first), "second": dict(second),
                               "blob_sizes": blobs, "part_size": self.part}


def _warm(url: str, count: int = 20) -> None:
    """A few HEADs first, so that caches are warm when the load starts."""
    for _ in range(count):
        request = urllib.request.Request(url, method="HEAD", headers={"Accept": ocihttp.ACCEPT})
        with urllib.request.urlopen(request, timeout=10):
            pass


_SHORT = {"BatchCheckLayerAvailability": "Check", "InitiateLayerUpload": "Initiate",
          "UploadLayerPart": "Part", "CompleteLayerUpload": "Complete"}


def _with_tail(base: list[bytes], tail: bytes) -> Iterator[bytes]:
    yield from base
    yield tail


async def _create_repository(url: str, name: str) -> None:
    from tests.support.emulator import ecr_client

    async with ecr_client(url) as ecr:
        try:
            await ecr.create_repository(repositoryName=name)
        except ecr.exceptions.RepositoryAlreadyExistsException:
            pass


async def _manifest_blob_sizes(base: str, repo: str, tag: str) -> list[int]:
    async with ocihttp.session(2) as http, http.get(
            f"{base}/v2/{repo}/manifests/{tag}", headers={"Accept": ocihttp.ACCEPT}) as answer:
        manifest = json.loads(await answer.read())
    return [manifest["config"]["size"], *(layer["size"] for layer in manifest["layers"])]


class _DockerPusher:
    """A private dockerd (tests/support/clients.Dockerd) that loads and pushes one image."""

    def __init__(self, work: Path) -> None:
        from tests.support.clients import Dockerd

        self.daemon = Dockerd().start()
        self.docker = self.daemon.client(work / "config")

    def load(self, archive: Path) -> None:
        self.docker("load", "-i", str(archive), timeout=600)

    def push(self, local: str, remote: str) -> None:
        self.docker("tag", local, remote)
        self.docker("push", remote, timeout=600)

    def stop(self) -> None:
        self.daemon.stop()


def push_cpu_row(times: dict[str, list[float]],
                 whole: dict[str, list[tuple[float, float]]]) -> Row:
    """The CPU of every process in each side's fastest push (skopeo's too), and how busy it
    kept the machine's CPUs: where both sides keep them busy, the push's time follows the
    CPU it takes, and the ratio of CPU is what the time ratio can come down to."""
    cpus = os.cpu_count() or 1
    parts = []
    totals = {}
    for key in ("push_gw", "push_ref"):
        fastest = times[key].index(min(times[key]))
        skopeo, registry = whole[key][fastest]
        totals[key] = skopeo + registry
        busy = totals[key] / (min(times[key]) * cpus)
        parts.append(f"{totals[key]:.2f} CPU-s (skopeo {skopeo:.2f}) keeping {busy:.0%} of "
                     f"the {cpus} CPUs busy")
    ratio = totals["push_gw"] / totals["push_ref"]
    return Row("push_cpu_all", "CPU-s of every process in the push, skopeo + gateway + "
               "emulator ÷ skopeo + distribution", "information",
               measured=f"{ratio:.2f} ({parts[0]} vs {parts[1]})")


def floor_row(key: str, title: str, floor: pushfloor.Floor, target: float) -> Row:
    """An information row: a side's floor, each pass's CPU-s per GiB of layer, and whether the
    floor alone is above the judged target (then the target is out of reach on this machine)."""
    above = (f"; above the ≤ {target:g} target: the limit on this machine"
             if floor.total > target else "")
    direct = "" if floor.direct else " (no O_DIRECT on the work disk: a page-cache write)"
    return Row(key, title, "information", measured=floor.text() + direct + above,
               extra={"floor": floor.passes})


def page_cache_write_cost(path: Path, size: int) -> tuple[float, float]:
    """CPU-s per GiB this thread spends writing ``size`` bytes into a new file, then writing
    them again over the same, now cached, pages. On a VM whose idle memory the host reclaims,
    the first costs many times the second: every fresh page is faulted in from the host."""
    chunk = os.urandom(4 * MiB)
    costs = []
    for flags in (os.O_CREAT | os.O_TRUNC, 0):
        fd = os.open(path, os.O_WRONLY | flags, 0o600)
        started = time.thread_time()
        try:
            for _ in range(max(1, size // len(chunk))):
                os.write(fd, chunk)
        finally:
            os.close(fd)
        costs.append((time.thread_time() - started) / (size / GiB))
    path.unlink()
    return costs[0], costs[1]


def pull_folder(work: Path, room: int) -> Path:
    """Where pulled images land: a tmpfs when there is room, so that the client's own disk
    writes (the same for both registries, and at the mercy of other work on the disk) do not
    swamp the difference between the registries."""
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > room:
        folder = Path(tempfile.mkdtemp(prefix="ecr-gateway-bench-pulls-", dir=shm))
    else:
        folder = work / "pulls"
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def config_has(section: str, key: str) -> bool:
    """Whether this version of gateway.config knows ``key`` in section ``section`` (a pydantic
    model; a dataclass in older versions)."""
    from gateway import config

    cls = getattr(config, section, None)
    if cls is None:
        return False
    if hasattr(cls, "model_fields"):
        return key in cls.model_fields
    return key in {f.name for f in dataclasses.fields(cls)}


def containerd_available(log: Callable[[str], None]) -> bool:
    """Whether containerd and ctr are installed, for the ``ctr content fetch`` rows."""
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        log("  containerd not installed: the ctr fetch rows read n/a")
        return False
    return True


def blob_cache_supported() -> bool:
    return config_has("BlobsConfig", "cache")


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_average": os.getloadavg(),
            "python": platform.python_version(), "platform": platform.platform(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one round (~1 min)")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="where latest.json and latest.png go (default: bench/results)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--economy-client", choices=("docker", "skopeo"),
                        help="who pushes for the upstream-economy row (default: docker if "
                             "installed)")
    parser.add_argument("--only", action="append", choices=SECTIONS,
                        help="run only this section (repeatable); the default is all")
    args = parser.parse_args(argv)
    sections = args.only or list(SECTIONS)
    sizes = SMOKE if args.smoke else QUICK if args.quick else FULL
    economy_client = args.economy_client or (
        "docker" if shutil.which("dockerd") and not args.smoke else "skopeo")
    work = args.work or Path(tempfile.mkdtemp(prefix="ecr-gateway-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    bench = Bench(sizes, work, log)
    started = time.monotonic()
    meta: dict[str, Any] = {"profile": sizes.name, "machine": machine(),
                            "head_load_tool": load.tool_name(), "economy_client": economy_client,
                            "part_size": bench.part, "sizes": dataclasses.asdict(sizes),
                            "pulls_into": str(bench.pulls.parent)}
    try:
        log(f"starting the reference registry, the emulator and the gateways in {work}")
        bench.start()
        meta["reference"] = bench.reference.version()
        for section in sections:
            log(SECTIONS[section])
            if section == "economy":
                bench.economy(economy_client)
            else:
                getattr(bench, section)()
    finally:
        bench.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    meta["seconds"] = round(time.monotonic() - started, 1)
    meta["raw"] = bench.raw
    title = (f"ecr-gateway vs {meta.get('reference', 'distribution')} — {sizes.name} profile, "
             f"{meta['machine']['cpus']} CPUs, load {meta['machine']['load_average'][0]:.1f} "
             f"at start; every figure a ratio measured in the same run")
    report.write_json(args.out / "latest.json", bench.rows, meta)
    charted = report.write_chart(args.out / "latest.png", bench.rows, title)
    print(report.table(bench.rows))
    print()
    print(report.summary(bench.rows))
    print(f"Ratios are measured in the same run on a shared {meta['machine']['cpus']}-CPU machine "
          f"(load average {meta['machine']['load_average'][0]:.1f} at start); absolute times are "
          "informative only. HEAD load: "
          f"{meta['head_load_tool']}; economy client: {economy_client}; "
          f"{meta['seconds']:.0f} s in all.")
    print(f"Written: {args.out / 'latest.json'}"
          + (f", {args.out / 'latest.png'}" if charted else " (no matplotlib: no chart)"))
    return 0
