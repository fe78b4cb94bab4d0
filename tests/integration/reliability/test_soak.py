"""Soak: concurrent clients push and pull images while the emulator throttles 5% of calls,
fails 1% with 500 ServerException and cuts 1% of its answers mid-response (plus parts that
land but are answered InvalidLayerPartException, and added latency); clients also drop their
own connections mid-PATCH and resume from the Range the gateway reports.

Result checked: every push a client saw succeed is pullable and byte-identical (every digest
re-verified by a fresh client at the end); every failure a client saw was an OCI error with
a retriable status (429/503) and Retry-After; nothing is left behind (sessions, spools,
staged blobs, emulator uploads) beyond what the counted faults explain; no traceback, no
secret in any log. The counts are printed.

CI runs 120 images with 8 clients; ``--long`` (or RELIABILITY_LONG=1) runs 300 with 12.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.integration.reliability.helpers import (
    GiveUp,
    MiB,
    RetryingClient,
    Tally,
    digest_of,
    image_manifest,
    injected,
    injected_by_kind,
    local_state,
    log_text,
    random_bytes,
    set_faults,
)
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

UPSTREAM_SECRET = "gateway-test-secret"  # what GatewayProcess gives the gateway for ECR
FAULTS = [
    {"action": "*", "error": "ThrottlingException", "rate": 0.05},
    {"action": "*", "error": "ServerException", "rate": 0.01},
    {"action": "*", "disconnect": True, "rate": 0.01},
    {"action": "UploadLayerPart", "error": "InvalidLayerPartException", "after": True,
     "rate": 0.02},
    {"action": "*", "latency": 0.02, "rate": 0.05},
]


@dataclass
class Image:
    repo: str
    tag: str
    manifest: bytes
    blobs: dict[str, bytes]


@dataclass
class Results:
    pushed: list[Image] = field(default_factory=list)
    push_failures: int = 0
    pulls: int = 0
    blobs_uploaded: int = 0
    failed_blobs: set[str] = field(default_factory=set)


@pytest.fixture
def soak_pair(tmp_path: Path) -> Iterator[tuple[EmulatorProcess, GatewayProcess]]:
    emulator = EmulatorProcess(tmp_path / "ecr")
    emulator.start()
    # A short retry budget, so that clients do see the gateway give up (and how it does).
    config = {"upstream": {"retry_budget_seconds": 0.08, "breaker_open_seconds": 0.5},
              "log_level": "info"}
    gateway = GatewayProcess(tmp_path / "gw", config, upstream_url=emulator.url)
    gateway.start()
    yield emulator, gateway
    gateway.stop()
    emulator.stop()


async def _push_and_pull(client: RetryingClient, rng: random.Random, results: Results,
                         index: int) -> None:
    repo = f"soak/r{index % 10}"
    tag = f"i{index}"
    layers = [random_bytes(rng, rng.choice((300, 3000, 40_000, 200_000)))
              for _ in range(rng.randint(1, 2))]
    if rng.random() < 0.12:
        layers.append(random_bytes(rng, 6 * MiB + rng.randint(0, 2 * MiB)))  # real parts
    config = json.dumps({"architecture": "amd64", "os": "linux", "index": index,
                         "salt": rng.random()}).encode()
    blobs = {digest_of(b): b for b in [*layers, config]}
    try:
        for blob in [*layers, config]:
            drop = rng.uniform(0.2, 0.8) if len(blob) >= 16_000 and \
                (len(blob) > MiB or rng.random() < 0.15) else None
            chunk = rng.choice((None, None, 64 * 1024, MiB))
            await client.upload(repo, blob, chunk=chunk, drop_at=drop)
            results.blobs_uploaded += 1
        manifest = image_manifest(config, layers)
        await client.put_manifest(repo, tag, manifest)
    except GiveUp:
        results.push_failures += 1
        results.failed_blobs.update(blobs)
        return
    image = Image(repo, tag, manifest, blobs)
    results.pushed.append(image)
    pulled, got = await client.pull(repo, tag)  # right away, by the pusher
    assert pulled == manifest and sorted(got, key=digest_of) == sorted(
        blobs.values(), key=digest_of)
    results.pulls += 1


async def test_soak(soak_pair: tuple[EmulatorProcess, GatewayProcess], long_run: bool) -> None:
    emulator, gateway = soak_pair
    images, clients = (300, 12) if long_run else (120, 8)
    set_faults(emulator, FAULTS, seed=20_26)
    tally, results = Tally(), Results()
    started = time.monotonic()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(images):
        queue.put_nowait(index)

    async def worker(number: int) -> None:
        rng = random.Random(number)
        async with aiohttp.ClientSession() as session:
            client = RetryingClient(session, gateway, tally, rng=rng)
            while not queue.empty():
                await _push_and_pull(client, rng, results, queue.get_nowait())

    await asyncio.gather(*(worker(n) for n in range(clients)))
    push_seconds = time.monotonic() - started
    stats = injected(emulator)
    set_faults(emulator, [], seed=0)  # the final check reads without faults

    # Every acknowledged image, pulled again by a fresh client: byte-identical.
    async with aiohttp.ClientSession() as session:
        verifier = RetryingClient(session, gateway, Tally())
        for image in results.pushed:
            manifest, blobs = await verifier.pull(image.repo, image.tag)
            assert manifest == image.manifest
            assert {digest_of(b): b for b in blobs} == image.blobs
    await asyncio.sleep(0.5)  # the last log lines arrive through a pipe

    state = local_state(gateway, emulator)
    kinds = injected_by_kind(stats)
    statuses = Counter(entry["status"] for entry in gateway.access_log())
    print(f"\nsoak: {len(results.pushed)}/{images} images pushed and pulled byte-identical by "
          f"{clients} clients in {push_seconds:.1f}s ({results.push_failures} pushes given up, "
          f"{results.blobs_uploaded} blobs uploaded, {results.pulls} pulls + "
          f"{len(results.pushed)} verifying pulls)")
    print(f"soak: injected {dict(kinds)}; per action {stats}")
    print(f"soak: client drops mid-PATCH {tally.client_disconnects}, resumed from "
          f"{len(tally.resumed_from)} reported offsets; retriable failures seen by clients "
          f"{dict(tally.retried)}; unexpected {len(tally.unexpected)}")
    print(f"soak: gateway answers {dict(sorted(statuses.items()))}; left behind {state}")

    logs = log_text(gateway, emulator)
    assert "Traceback" not in logs, logs[logs.index("Traceback") - 300:][:4000]
    assert not tally.unexpected, tally.unexpected[:10]
    assert len(results.pushed) >= images * 0.9
    assert kinds["ThrottlingException"] and kinds["disconnect"] and kinds["ServerException"]
    assert tally.client_disconnects >= 3 and tally.resumed_from
    assert not [s for s in statuses if s >= 500 and s != 503]
    # Nothing grows without bound: every upload ended (clients finish or cancel them),
    # staged blobs are only those no image references (pushes given up), and the emulator
    # holds no upload beyond those whose InitiateLayerUpload answer was cut (the gateway
    # asked again), which ECR expires.
    assert state.sessions == 0 and state.spools == 0
    assert state.staged <= len(results.failed_blobs)
    initiate_cut = stats.get("InitiateLayerUpload", {}).get("disconnect", 0)
    assert state.emulator_uploads <= initiate_cut + tally.abandoned_uploads
    assert UPSTREAM_SECRET not in logs and "Signature=" not in logs
