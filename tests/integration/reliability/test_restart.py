"""kill -9 of the gateway, then of the emulator behind it, while uploads and manifest PUTs are
in flight. After a restart: everything acknowledged is intact, byte for byte; every
interrupted upload is either resumable from the Range it reports or cleanly
BLOB_UPLOAD_UNKNOWN; an interrupted manifest PUT can simply be sent again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.integration.reliability.helpers import (
    OCI_MANIFEST,
    MiB,
    digest_of,
    image_manifest,
    local_state,
    log_text,
)
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

CHUNK = 1 * MiB


@dataclass
class Upload:
    name: str
    data: bytes
    location: str = ""
    acknowledged: int = 0  # bytes the last 202 covered
    done: bool = False


@dataclass
class Work:
    """What the clients were told before the crash."""

    blobs: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # digest → (name, data)
    manifests: dict[tuple[str, str], bytes] = field(default_factory=dict)
    interrupted: list[Upload] = field(default_factory=list)
    manifest_puts: list[tuple[str, str, bytes]] = field(default_factory=list)  # unanswered


async def _upload_worker(session: aiohttp.ClientSession, base: str, work: Work, name: str,
                         rng: random.Random) -> None:
    """Upload blobs of 3 to 14 MiB in 1 MiB PATCHes, one after another, until the gateway dies."""
    while True:
        upload = Upload(name, os.urandom(rng.randint(3 * MiB, 14 * MiB)))
        try:
            async with session.post(f"{base}/v2/{name}/blobs/uploads/") as r:
                assert r.status == 202, await r.text()
                upload.location = r.headers["Location"]
            work.interrupted.append(upload)
            for offset in range(0, len(upload.data), CHUNK):
                piece = upload.data[offset:offset + CHUNK]
                async with session.patch(f"{base}{upload.location}", data=piece, headers={
                        "Content-Range": f"{offset}-{offset + len(piece) - 1}"}) as r:
                    assert r.status == 202, await r.text()
                    upload.location = r.headers["Location"]
                    upload.acknowledged = offset + len(piece)
            digest = digest_of(upload.data)
            async with session.put(f"{base}{upload.location}?digest={digest}") as r:
                assert r.status == 201, await r.text()
            work.interrupted.remove(upload)
            work.blobs[digest] = (name, upload.data)
        except (aiohttp.ClientError, ConnectionError):
            return  # the gateway is gone


async def _manifest_worker(session: aiohttp.ClientSession, base: str, work: Work, name: str,
                           rng: random.Random) -> None:
    """Push small images (two small blobs, then the manifest) until the gateway dies."""
    count = 0
    while True:
        count += 1
        tag = f"t{count}"
        config = json.dumps({"n": count, "r": rng.random()}).encode()
        layer = os.urandom(rng.randint(100, 5000))
        manifest = image_manifest(config, [layer])
        try:
            for blob in (layer, config):
                async with session.post(f"{base}/v2/{name}/blobs/uploads/?digest="
                                        f"{digest_of(blob)}", data=blob) as r:
                    assert r.status == 201, await r.text()
                work.blobs[digest_of(blob)] = (name, blob)
            work.manifest_puts.append((name, tag, manifest))
            async with session.put(f"{base}/v2/{name}/manifests/{tag}", data=manifest,
                                   headers={"Content-Type": OCI_MANIFEST}) as r:
                assert r.status == 201, await r.text()
            work.manifest_puts.remove((name, tag, manifest))
            work.manifests[(name, tag)] = manifest
        except (aiohttp.ClientError, ConnectionError):
            return


async def _run_until(crash: asyncio.Future[None], session: aiohttp.ClientSession,
                     gateway: GatewayProcess, work: Work, run: str, seed: int) -> None:
    rng = random.Random(seed)
    workers = [asyncio.create_task(_upload_worker(session, gateway.url, work,
                                                  f"restart/{run}-up{i}", rng))
               for i in range(3)]
    workers += [asyncio.create_task(_manifest_worker(session, gateway.url, work,
                                                     f"restart/{run}-img{i}", rng))
                for i in range(3)]
    await crash
    await asyncio.wait(workers, timeout=30)
    for worker in workers:
        if not worker.done():
            worker.cancel()
        else:
            worker.result()  # a worker that failed otherwise than by the crash fails the test


async def _verify(session: aiohttp.ClientSession, base: str, work: Work) -> Counter[str]:
    """Everything acknowledged is intact; interrupted work resumes or is cleanly unknown."""
    seen: Counter[str] = Counter()
    for digest, (name, data) in work.blobs.items():
        async with session.get(f"{base}/v2/{name}/blobs/{digest}") as r:
            assert r.status == 200, (digest, r.status, await r.text())
            assert await r.read() == data
        seen["acknowledged blobs intact"] += 1
    for (name, tag), manifest in work.manifests.items():
        async with session.get(f"{base}/v2/{name}/manifests/{tag}") as r:
            assert r.status == 200 and await r.read() == manifest
        seen["acknowledged manifests intact"] += 1
    for upload in work.interrupted:
        async with session.get(f"{base}{upload.location}") as r:
            if r.status == 404:
                assert (await r.json())["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
                seen["interrupted uploads unknown"] += 1
                continue
            assert r.status == 204, (r.status, await r.text())
            end = int(r.headers["Range"].split("-")[1])
            received = end + 1 if end else 0
            location = r.headers["Location"]
        assert received >= upload.acknowledged  # nothing acknowledged was lost
        for _ in range(3):
            if received >= len(upload.data):
                break
            rest = upload.data[received:]
            async with session.patch(f"{base}{location}", data=rest, headers={
                    "Content-Range": f"{received}-{len(upload.data) - 1}"}) as r:
                if r.status == 202:
                    location = r.headers["Location"]
                    break
                # The gateway found ECR ahead of its record (parts cut differently before
                # the crash): it realigned, and the client continues from the new Range.
                assert r.status == 503 and "Range" in r.headers, (r.status, await r.text())
                seen["resumes realigned with ECR"] += 1
                received = int(r.headers["Range"].split("-")[1]) + 1
        digest = digest_of(upload.data)
        async with session.put(f"{base}{location}?digest={digest}") as r:
            assert r.status == 201, (r.status, await r.text())
        async with session.get(f"{base}/v2/{upload.name}/blobs/{digest}") as r:
            assert r.status == 200 and await r.read() == upload.data
        seen["interrupted uploads resumed"] += 1
    for name, tag, manifest in work.manifest_puts:
        async with session.put(f"{base}/v2/{name}/manifests/{tag}", data=manifest,
                               headers={"Content-Type": OCI_MANIFEST}) as r:
            assert r.status == 201, await r.text()
        async with session.get(f"{base}/v2/{name}/manifests/{tag}") as r:
            assert await r.read() == manifest
        seen["interrupted manifest PUTs sent again"] += 1
    return seen


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[EmulatorProcess, GatewayProcess]]:
    emulator = EmulatorProcess(tmp_path / "ecr")
    emulator.start()
    gateway = GatewayProcess(tmp_path / "gw", {"upstream": {"breaker_open_seconds": 0.5}},
                             upstream_url=emulator.url)
    gateway.start()
    yield emulator, gateway
    gateway.stop()
    emulator.stop()


async def test_gateway_kill9_during_uploads_and_manifest_puts(
        pair: tuple[EmulatorProcess, GatewayProcess]) -> None:
    emulator, gateway = pair
    totals: Counter[str] = Counter()
    async with aiohttp.ClientSession() as session:
        for run, delay in enumerate((1.5, 2.5)):
            work = Work()
            loop = asyncio.get_running_loop()
            crash: asyncio.Future[None] = loop.create_future()

            def kill(crash: asyncio.Future[None] = crash) -> None:
                gateway.kill9()
                crash.set_result(None)

            loop.call_later(delay, kill)
            await _run_until(crash, session, gateway, work, f"gw{run}", seed=run)
            gateway.start()  # same port, same data dir
            totals += await _verify(session, gateway.url, work)
    print(f"\ngateway kill -9 x2: {dict(totals)}; after: "
          f"{local_state(gateway, emulator)}")
    assert totals["interrupted uploads resumed"] + totals["interrupted uploads unknown"] >= 2
    assert totals["acknowledged manifests intact"] >= 1
    # Left over: only sessions whose POST was cut before its answer reached a client (at
    # most one per worker and crash); they expire after uploads.idle_timeout_seconds.
    state = local_state(gateway, emulator)
    assert state.sessions <= 6 * 2 and state.spools <= state.sessions
    assert "Traceback" not in log_text(gateway, emulator)


async def test_emulator_kill9_behind_the_gateway(
        pair: tuple[EmulatorProcess, GatewayProcess]) -> None:
    """Clients see 503 + Retry-After while ECR is down, then finish their work."""
    emulator, gateway = pair
    work = Work()
    refused: Counter[str] = Counter()
    async with aiohttp.ClientSession() as session:
        loop = asyncio.get_running_loop()
        crash: asyncio.Future[None] = loop.create_future()

        async def outage() -> None:
            await asyncio.sleep(1.0)
            emulator.kill9()
            await asyncio.sleep(2.0)
            emulator.start()
            crash.set_result(None)

        async def tolerant_upload(name: str, data: bytes) -> None:
            """A client that waits out 503s and resumes from the reported Range."""
            location = ""
            while not location:
                async with session.post(f"{gateway.url}/v2/{name}/blobs/uploads/") as r:
                    if r.status == 503:
                        refused["POST 503"] += 1
                        await asyncio.sleep(float(r.headers["Retry-After"]) * 0.3)
                        continue
                    assert r.status == 202, await r.text()
                    location = r.headers["Location"]
            offset = 0
            while offset < len(data):
                piece = data[offset:offset + CHUNK]
                async with session.patch(f"{gateway.url}{location}", data=piece, headers={
                        "Content-Range": f"{offset}-{offset + len(piece) - 1}"}) as r:
                    if r.status == 202:
                        offset += len(piece)
                        location = r.headers["Location"]
                        continue
                    assert r.status in (503, 416), (r.status, await r.text())
                    assert r.headers.get("Retry-After") or r.status == 416
                    refused[f"PATCH {r.status}"] += 1
                await asyncio.sleep(0.3)
                async with session.get(f"{gateway.url}{location}") as status:
                    assert status.status == 204, await status.text()
                    end = int(status.headers["Range"].split("-")[1])
                    offset = end + 1 if end else 0
            digest = digest_of(data)
            while True:
                async with session.put(f"{gateway.url}{location}?digest={digest}") as r:
                    if r.status == 201:
                        break
                    assert r.status == 503, (r.status, await r.text())
                    refused["PUT 503"] += 1
                await asyncio.sleep(0.3)
            work.blobs[digest] = (name, data)

        async def client(i: int) -> None:
            # Keep uploading until the outage is over (however fast this machine is), so
            # some requests always meet the dead upstream; then one more after recovery.
            while not crash.done():
                await tolerant_upload(f"restart/emu-{i}", os.urandom(random.randint(2, 12) * MiB))
            await tolerant_upload(f"restart/emu-{i}", os.urandom(2 * MiB))

        outage_task = asyncio.create_task(outage())
        await asyncio.gather(*(client(i) for i in range(4)))
        await outage_task
        seen = await _verify(session, gateway.url, work)
    print(f"\nemulator kill -9 behind the gateway: {dict(seen)}; refusals seen by clients: "
          f"{dict(refused)}")
    assert seen["acknowledged blobs intact"] >= 4
    assert sum(refused.values()) >= 1  # the outage was seen, as retriable refusals
    with contextlib.suppress(FileNotFoundError):
        assert "Traceback" not in log_text(gateway, emulator)
