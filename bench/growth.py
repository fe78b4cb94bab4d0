"""Cost as work grows: one blob of growing size, and a growing number of pushes at once.

* size: single-layer blobs (64 MiB, 256 MiB, 1 GiB, 4 GiB in the full profile) pushed
  through the gateway as docker sends them (POST, one streamed PATCH, PUT ?digest=), the
  bytes made while sending and hashed on the way, so the client never holds a blob. Judged:
  seconds per GiB at the largest ÷ at 256 MiB (time linear), and the growth of the gateway's
  peak RSS from the smallest blob to the largest (memory flat: a gateway that streams holds
  parts, never the blob).
* concurrency: 1, 8 and 64 pushes at once of distinct 16 MiB blobs. Judged: throughput at
  the most ÷ at 1 (no collapse) and the peak RSS under the most (bounded by parts in flight).

Peak RSS is VmHWM after resetting it (``/proc/PID/clear_refs``) just before each step.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import ocihttp
from bench.images import FreshBytes
from bench.report import Row
from bench.services import cpu_seconds, first_touches, peak_rss, reset_peak_rss, rss

if TYPE_CHECKING:
    from bench.run import Bench

MiB = 1024 * 1024
GiB = 1024 * MiB
# Each pushed byte lands twice on the work disk: the gateway's staging copy and the
# emulator's layer store; the rest is room for everything else.
DISK_FACTOR = 2.5
# Allowed growth of the peak RSS from the smallest blob to the largest: six 10 MiB parts of
# slack for allocator noise, and far below what holding even 2% of a 4 GiB blob would add.
FLAT_GROWTH = 64 * MiB


@dataclass(frozen=True)
class Profile:
    sizes: tuple[int, ...]  # one blob each; the second is the linearity reference
    repeats: int  # pushes of each size below LINEAR_REFERENCE_MAX (the median counts)
    concurrency: tuple[int, ...]
    concurrent_size: int


PROFILES = {
    "full": Profile((64 * MiB, 256 * MiB, 1 * GiB, 4 * GiB), 3, (1, 8, 64), 16 * MiB),
    "quick": Profile((16 * MiB, 32 * MiB, 64 * MiB, 128 * MiB), 2, (1, 4, 8), 16 * MiB),
    "smoke": Profile((1 * MiB, 2 * MiB, 3 * MiB, 4 * MiB), 1, (1, 2, 4), 1 * MiB),
}
LINEAR_REFERENCE_MAX = 256 * MiB


def fit_to_disk(sizes: tuple[int, ...], free: int) -> tuple[int, ...]:
    """Halve the largest size until the run fits the free disk (never below the one before)."""
    largest = sizes[-1]
    while largest // 2 >= sizes[-2] and DISK_FACTOR * (sum(sizes[:-1]) + largest) > free:
        largest //= 2
    return (*sizes[:-1], largest)


def label(size: int) -> str:
    return f"{size // GiB} GiB" if size >= GiB and size % GiB == 0 else f"{size // MiB} MiB"


async def _streamed_push(http: Any, base: str, repo: str, chunks: Iterator[bytes],
                         size: int) -> None:
    """One streamed PATCH of ``chunks``, hashed on the way; the digest goes in the PUT."""
    hasher = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            hasher.update(chunk)
            yield chunk

    location = await ocihttp.start_upload(http, base, repo)
    location = await ocihttp.patch(http, base, location, body(), size)
    await ocihttp.finish(http, base, location, "sha256:" + hasher.hexdigest())


def _push_sizes(url: str, pid: int, fresh: FreshBytes, sizes: tuple[int, ...],
                repeats: int) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        out = []
        async with ocihttp.session(4) as http:
            for index, size in enumerate(sizes):
                seconds, peaks = [], []
                for _ in range(repeats if size <= LINEAR_REFERENCE_MAX else 1):
                    before = rss(pid)
                    reset_peak_rss(pid)
                    started = time.monotonic()
                    await _streamed_push(http, url, f"bench/growth{index}",
                                         fresh.chunks(size), size)
                    seconds.append(time.monotonic() - started)
                    peaks.append(peak_rss(pid))
                out.append({"size": size, "seconds": statistics.median(seconds),
                            "all_seconds": seconds, "peak": max(peaks), "rss_before": before})
        return out

    return asyncio.run(run())


def _with_tail(base: list[bytes], tail: bytes) -> Iterator[bytes]:
    yield from base
    yield tail


def _cpu(pid: int, emulator_pid: int) -> dict[str, float]:
    """CPU-s so far of the gateway, the emulator and this process (the pushing client)."""
    own = os.times()
    return {"gateway": cpu_seconds(pid), "emulator": cpu_seconds(emulator_pid),
            "client": own.user + own.system}


def _machine_idle() -> float:
    """CPU-s the whole machine has spent idle so far (all CPUs; /proc/stat's idle + iowait):
    during a step, what was left for more work, by this run or by anything else."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def _calls(log: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The emulator's calls by action: how many, and their summed duration in seconds."""
    out: dict[str, dict[str, float]] = {}
    for entry in log:
        call = out.setdefault(entry["action"], {"count": 0, "seconds": 0.0})
        call["count"] += 1
        call["seconds"] += entry.get("duration_ms", 0.0) / 1000
    return out


def _push_concurrently(url: str, pid: int, emulator: Any, fresh: FreshBytes,
                       levels: tuple[int, ...], size: int) -> list[dict[str, Any]]:
    # One shared body with a distinct 64-byte tail per push: distinct blobs, and the client
    # hashes each body once instead of once per push.
    base = list(fresh.chunks(size - 64))
    base_hash = hashlib.sha256()
    for chunk in base:
        base_hash.update(chunk)

    async def run() -> list[dict[str, Any]]:
        out = []
        async with ocihttp.session(2 * max(levels)) as http:
            async def one(level: int, index: int) -> None:
                tail = os.urandom(64)
                digest = base_hash.copy()
                digest.update(tail)
                await ocihttp.push_blob(http, url, f"bench/growth-c{level}-{index % 4}",
                                        _with_tail(base, tail), size,
                                        "sha256:" + digest.hexdigest())

            for level in levels:
                # At least 4 blobs per level, `level` at a time, so that 1 is not one push.
                count = max(level, 4)
                gate = asyncio.Semaphore(level)

                async def gated(gate: asyncio.Semaphore, level: int, index: int) -> None:
                    async with gate:
                        await one(level, index)

                before = rss(pid)
                reset_peak_rss(pid)
                emulator.clear_requests()
                cpu = _cpu(pid, emulator.pid)
                touched = first_touches(pid)
                idle = _machine_idle()
                started = time.monotonic()
                await asyncio.gather(*(gated(gate, level, i) for i in range(count)))
                seconds = time.monotonic() - started
                idle = (_machine_idle() - idle) / seconds
                gib = count * size / GiB
                spent = {key: (value - cpu[key]) / gib
                         for key, value in _cpu(pid, emulator.pid).items()}
                faults_now, system_now = first_touches(pid)
                faults, system = faults_now - touched[0], system_now - touched[1]
                out.append({"level": level, "blobs": count, "seconds": seconds,
                            "mib_s": count * size / MiB / seconds, "peak": peak_rss(pid),
                            "rss_before": before, "cpu_per_gib": spent,
                            "gateway_faults_per_gib": faults / gib,
                            "gateway_system_per_gib": system / gib,
                            "cpus_busy": sum(spent.values()) * gib / seconds,
                            "cpus_idle": idle,
                            "emulator_calls": _calls(emulator.requests())})
        return out

    return asyncio.run(run())


def run(bench: Bench) -> Iterator[Row]:
    assert bench.redirect
    gateway = bench.redirect
    profile = PROFILES[bench.sizes.name]
    free = shutil.disk_usage(bench.work).free
    sizes = fit_to_disk(profile.sizes, free)
    scaled = (f"; largest scaled down from {label(profile.sizes[-1])}: "
              f"{free / GiB:.1f} GiB free on the work disk") if sizes != profile.sizes else ""
    if scaled:
        bench.log(f"  {scaled[2:]}")

    pushed = _push_sizes(gateway.url, gateway.pid, bench.fresh, sizes, profile.repeats)
    for number, step in enumerate(pushed, start=1):
        per_gib = step["seconds"] / (step["size"] / GiB)
        yield Row(f"growth_push_{number}", f"push one {label(step['size'])} blob (streamed "
                  "PATCH): seconds, s/GiB, gateway peak RSS", "information",
                  measured=f"{step['seconds']:.2f} s, {per_gib:.2f} s/GiB, peak "
                           f"{step['peak'] / MiB:.0f} MiB (before {step['rss_before'] / MiB:.0f}"
                           " MiB)" + (scaled if number == len(pushed) else ""))
    reference, largest, smallest = pushed[1], pushed[-1], pushed[0]
    ratio = ((largest["seconds"] / largest["size"])
             / (reference["seconds"] / reference["size"]))
    figures = (f"{ratio:.2f} ({largest['seconds'] / (largest['size'] / GiB):.2f} vs "
               f"{reference['seconds'] / (reference['size'] / GiB):.2f} s/GiB){scaled}")
    title = (f"time linear: s/GiB pushing {label(largest['size'])} ÷ s/GiB pushing "
             f"{label(reference['size'])}")
    # At quick sizes fixed costs weigh more: a miss there reads n/a (quick sizes) (Row.profile).
    yield Row("growth_time_linear", title, "≤ 1.5", value=ratio, bound=1.5, measured=figures,
              extra={"short": "s/GiB largest ÷ 256 MiB"})
    growth = largest["peak"] - smallest["peak"]
    yield Row("growth_memory_flat", f"memory flat: gateway peak RSS pushing "
              f"{label(largest['size'])} minus pushing {label(smallest['size'])}",
              f"≤ {FLAT_GROWTH // MiB} MiB", value=growth / MiB, bound=FLAT_GROWTH / MiB,
              measured=f"{growth / MiB:+.0f} MiB ({smallest['peak'] / MiB:.0f} → "
                       f"{largest['peak'] / MiB:.0f} MiB){scaled}",
              extra={"short": "peak RSS growth, largest blob (MiB)"})

    size = profile.concurrent_size
    levels = _push_concurrently(gateway.url, gateway.pid, bench.emulator, bench.fresh,
                                profile.concurrency, size)
    bench.raw["growth"] = {"sizes": pushed, "concurrency": levels, "part_size": bench.part,
                           "free_disk": free}
    yield Row("growth_concurrency", f"pushes of distinct {label(size)} blobs at once: "
              "MiB/s and gateway peak RSS", "information",
              measured="; ".join(f"{lv['level']}: {lv['mib_s']:.0f} MiB/s, peak "
                                 f"{lv['peak'] / MiB:.0f} MiB" for lv in levels))
    yield Row("growth_concurrency_cpu", "the same pushes: CPU-s per GiB of gateway (of "
              "which system, and its minor page faults per GiB) + emulator + client, CPUs "
              "they kept busy, CPUs the machine left idle, emulator seconds per blob in "
              "UploadLayerPart / CompleteLayerUpload", "information",
              measured="; ".join(_cpu_text(lv) for lv in levels))
    one, most = levels[0], levels[-1]
    ratio = most["mib_s"] / one["mib_s"]
    cpu_one = sum(one["cpu_per_gib"].values())
    cpu_most = sum(most["cpu_per_gib"].values())
    yield Row("growth_concurrency_tput", f"push throughput, {most['level']} at once ÷ 1 at a "
              f"time ({label(size)} blobs)", "≥ 1", value=ratio, bound=1.0, better="higher",
              measured=f"{ratio:.2f} ({most['mib_s']:.0f} vs {one['mib_s']:.0f} MiB/s; "
                       f"CPU-s per GiB, all three processes: {cpu_most:.1f} vs {cpu_one:.1f}, "
                       f"CPUs busy {most['cpus_busy']:.1f} vs {one['cpus_busy']:.1f}, "
                       f"machine idle {most['cpus_idle']:.1f} vs {one['cpus_idle']:.1f} of "
                       f"{os.cpu_count()})",
              extra={"short": f"push MiB/s {most['level']} ÷ 1"})
    # The bound of the memory section's row, for this many uploads: each upload fills one
    # part (and glibc keeps heap fragments of the chunks it arrived in), the process holds
    # at most 8 cut parts more, plus the process itself.
    bound = 2 * most["level"] * bench.part + 150 * MiB
    yield Row("growth_concurrency_memory", f"gateway peak RSS, {most['level']} pushes at once",
              f"≤ 2x({most['level']}x{bench.part // MiB} MiB)+150 MiB = {bound // MiB} MiB",
              value=most["peak"] / MiB, bound=bound / MiB,
              measured=f"{most['peak'] / MiB:.0f} MiB (before: "
                       f"{most['rss_before'] / MiB:.0f} MiB)",
              extra={"short": f"peak RSS, {most['level']} pushes (MiB)"})


def _cpu_text(level: dict[str, Any]) -> str:
    cpu = level["cpu_per_gib"]
    calls = level["emulator_calls"]

    def per_blob(action: str) -> float:
        return calls.get(action, {}).get("seconds", 0.0) / level["blobs"]

    # The gateway's system CPU and its minor page faults (pages it touches first): on a VM
    # that hands freed memory back to its host, each costs several microseconds, and the
    # level that needs the most new memory (every upload filling a part) pays for them.
    return (f"{level['level']}: {cpu['gateway']:.1f} (system "
            f"{level['gateway_system_per_gib']:.1f}, "
            f"{level['gateway_faults_per_gib'] / 1000:.0f}k faults) + "
            f"{cpu['emulator']:.1f} + "
            f"{cpu['client']:.1f} CPU-s/GiB, {level['cpus_busy']:.1f} CPUs busy, "
            f"{level['cpus_idle']:.1f} idle, "
            f"{per_blob('UploadLayerPart'):.2f} / {per_blob('CompleteLayerUpload'):.2f} s")
