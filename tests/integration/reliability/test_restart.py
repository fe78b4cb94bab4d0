"""kill -9 of the gateway, then of the emulator behind it, while uploads and manifest PUTs are
in flight. After a restart: everything acknowledged is intact, byte for byte; every
interrupted upload is either resumable from the Range it reports or cleanly
BLOB_UPLOAD_UNKNOWN; an interrupted manifest PUT can simply be sent again. Then a seeded
schedule of kills of either process under clients pushing every kind of thing, checked
against every answer they got."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from tests.emulator.api.test_durability import check_store
from tests.integration.reliability.helpers import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    MiB,
    digest_of,
    image_manifest,
    local_state,
    log_text,
)
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.images import OCI_INDEX
from tests.support.oci import OciClient

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


async def test_a_blob_pushed_before_a_kill_stays_readable_where_it_was_pushed(
        pair: tuple[EmulatorProcess, GatewayProcess]) -> None:
    """ECR serves a layer only where an image references it, so a blob pushed but not yet
    referenced is read from the gateway's staged copy. An image of another repository that
    references the same digest must not take that copy away, whichever run staged it."""
    _, gateway = pair
    layer = os.urandom(3000)
    async with aiohttp.ClientSession() as session:
        await OciClient(session, gateway.url).push_blob("restart/first", layer)
    gateway.kill9()
    gateway.start()
    async with aiohttp.ClientSession() as session:
        oci = OciClient(session, gateway.url)
        await oci.push_image("restart/second", "v1", [layer])
        assert await oci.get_blob("restart/second", digest_of(layer)) == layer
        assert await oci.get_blob("restart/first", digest_of(layer)) == layer


async def test_a_session_file_cut_short_is_dropped_not_the_gateway(
        pair: tuple[EmulatorProcess, GatewayProcess]) -> None:
    """A session file cut to fewer bytes than its header's length (empty, as a file whose
    data never reached the disk is after a crash or a restore) is dropped at start like any
    other unreadable one: the gateway starts, and the other sessions resume."""
    _, gateway = pair
    data = os.urandom(3000)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gateway.url}/v2/restart/cut/blobs/uploads/") as r:
            assert r.status == 202, await r.text()
            location = r.headers["Location"]
        async with session.patch(f"{gateway.url}{location}", data=data[:1000], headers={
                "Content-Range": "0-999"}) as r:
            assert r.status == 202, await r.text()
            location = r.headers["Location"]
    gateway.kill9()
    sessions = gateway.data_dir / "sessions"
    cut = [sessions / f"{os.urandom(16).hex()}.session" for _ in range(2)]
    cut[0].write_bytes(b"")
    cut[1].write_bytes(b"\x00\x00")
    gateway.start()
    assert not any(path.exists() for path in cut)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}{location}") as r:
            assert r.status == 204, await r.text()
            assert r.headers["Range"] == "0-999"
        async with session.patch(f"{gateway.url}{location}", data=data[1000:], headers={
                "Content-Range": f"1000-{len(data) - 1}"}) as r:
            assert r.status == 202, await r.text()
            location = r.headers["Location"]
        joint = "&" if "?" in location else "?"
        async with session.put(f"{gateway.url}{location}{joint}digest={digest_of(data)}") as r:
            assert r.status == 201, await r.text()
        assert await OciClient(session, gateway.url).get_blob(
            "restart/cut", digest_of(data)) == data


# -- a seeded schedule of kills of either process under a mixed workload ---------------------

BASE = "crash/base"  # blobs pushed before the chaos, mounted from during it


@dataclass
class Ledger:
    """What every client was told, and what an unanswered request may have done."""

    blobs: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (repo, digest) → data
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # digest → ...
    tags: dict[tuple[str, str], set[str | None]] = field(default_factory=dict)  # may point to
    referrers: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # subject → refs
    uploads: Counter[str] = field(default_factory=Counter)
    refused: list[str] = field(default_factory=list)  # 4xx answers nothing explains

    def tag_acked(self, repo: str, tag: str, value: str | None) -> None:
        self.tags[(repo, tag)] = {value}

    def tag_maybe(self, repo: str, tag: str, value: str | None) -> None:
        self.tags.setdefault((repo, tag), {None}).add(value)


class Down(Exception):
    """No answer that counts: the connection broke, or a retriable 5xx."""


async def _ask(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
               ) -> tuple[int, CIMultiDictProxy[str], bytes]:
    try:
        async with session.request(method, url, **kwargs) as r:
            body = await r.read()
    except (TimeoutError, aiohttp.ClientError, ConnectionError) as error:
        raise Down(repr(error)) from None
    if r.status >= 500:
        raise Down(f"{r.status} {body[:200]!r}")
    return r.status, r.headers, body


async def _patient(session: aiohttp.ClientSession, method: str, url: str, stop: float,
                   **kwargs: Any) -> tuple[int, CIMultiDictProxy[str], bytes]:
    """The same request until it gets an answer (for reads and status checks only)."""
    while True:
        try:
            return await _ask(session, method, url, **kwargs)
        except Down:
            if time.monotonic() > stop:
                raise
            await asyncio.sleep(0.2)


async def _resumable_upload(session: aiohttp.ClientSession, base: str, ledger: Ledger,
                            repo: str, data: bytes, rng: random.Random, stop: float) -> None:
    """A chunked upload whose client, whenever a request goes unanswered, asks the upload's
    status and continues from the Range it reports (never below its last 202)."""
    status, headers, body = await _ask(session, "POST", f"{base}/v2/{repo}/blobs/uploads/")
    assert status == 202, (status, body)
    location, acked = headers["Location"], 0
    while True:
        try:
            while acked < len(data):
                piece = data[acked:acked + rng.randint(256 * 1024, 3 * MiB)]
                status, headers, body = await _ask(
                    session, "PATCH", f"{base}{location}", data=piece,
                    headers={"Content-Range": f"{acked}-{acked + len(piece) - 1}"})
                if status == 416:
                    raise Down("416")  # out of step after a crash: ask where it stands
                assert status == 202, (status, body)
                location = headers["Location"]
                assert headers["Range"] == f"0-{acked + len(piece) - 1}", headers["Range"]
                acked += len(piece)
            digest = digest_of(data)
            status, headers, body = await _ask(session, "PUT",
                                               f"{base}{location}?digest={digest}")
            if status == 404 and json.loads(body)["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN":
                # The PUT that completed it went unanswered before this one.
                status, _, _ = await _patient(session, "HEAD",
                                              f"{base}/v2/{repo}/blobs/{digest}", stop)
                if status == 200:
                    ledger.uploads["completed, answer lost"] += 1
                    ledger.blobs[(repo, digest)] = data
                    return
            assert status == 201, (status, body)
            ledger.blobs[(repo, digest)] = data
            return
        except Down:
            if time.monotonic() > stop:
                return
            await asyncio.sleep(0.2)
            status, headers, body = await _patient(session, "GET", f"{base}{location}", stop)
            if status == 404:
                assert json.loads(body)["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN", body
                ledger.uploads["interrupted, cleanly unknown"] += 1
                return
            assert status == 204, (status, body)
            end = int(headers["Range"].split("-")[1])
            received = end + 1 if end else 0
            assert received >= acked, f"a 202 covered {acked} bytes, the upload holds {received}"
            location, acked = headers["Location"], received
            ledger.uploads["resumed"] += 1


async def _put_manifest(session: aiohttp.ClientSession, base: str, ledger: Ledger, repo: str,
                        reference: str, document: dict[str, Any]) -> str | None:
    """PUT a manifest; its digest once acknowledged (None: unanswered, it may have landed)."""
    body = json.dumps(document).encode()
    digest = digest_of(body)
    is_tag = not reference.startswith("sha256:")
    try:
        status, headers, text = await _ask(session, "PUT", f"{base}/v2/{repo}/manifests/"
                                           f"{reference}", data=body,
                                           headers={"Content-Type": document["mediaType"]})
    except Down:
        if is_tag:
            ledger.tag_maybe(repo, reference, digest)
        return None
    if status != 201:
        ledger.refused.append(f"PUT manifest {repo}:{reference} {status} {text[:300]!r}")
        return None
    assert headers["Docker-Content-Digest"] == digest
    ledger.manifests[digest] = (repo, body)
    if is_tag:
        ledger.tag_acked(repo, reference, digest)
    subject = document.get("subject")
    if subject:
        ledger.referrers.setdefault((repo, subject["digest"]), set()).add(digest)
    return digest


async def _crash_client(session: aiohttp.ClientSession, base: str, ledger: Ledger,
                        client: int, seed: int, chaos: asyncio.Event, stop: float,
                        mountable: list[tuple[str, int]]) -> None:
    rng = random.Random(seed * 1000 + client)
    repo = f"crash/c{client}"
    images: list[tuple[str, int]] = []  # acknowledged manifests of this repository
    while not chaos.is_set():
        op = rng.choice(["chunked", "monolithic", "mount", "image", "image", "index",
                         "referrer", "untag"])
        try:
            if op == "chunked":
                data = rng.randbytes(rng.randint(1 * MiB, 11 * MiB))
                await _resumable_upload(session, base, ledger, repo, data, rng, stop)
            elif op == "monolithic":
                data = rng.randbytes(rng.randint(1, 300_000))
                status, _, body = await _ask(session, "POST", f"{base}/v2/{repo}/blobs/uploads/"
                                             f"?digest={digest_of(data)}", data=data)
                assert status == 201, (status, body)
                ledger.blobs[(repo, digest_of(data))] = data
            elif op == "mount":
                digest, size = rng.choice(mountable)
                status, _, body = await _ask(session, "POST", f"{base}/v2/{repo}/blobs/uploads/"
                                             f"?mount={digest}&from={BASE}")
                if status == 201:
                    ledger.blobs[(repo, digest)] = ledger.blobs[(BASE, digest)]
            elif op in ("image", "referrer"):
                layer = rng.randbytes(rng.randint(100, 20_000))
                if rng.random() < 0.3:  # one that BASE holds unreferenced
                    layer = ledger.blobs[(BASE, rng.choice(mountable)[0])]
                config = json.dumps({"client": client, "n": rng.random()}).encode()
                for blob in (layer, config):
                    status, _, body = await _ask(
                        session, "POST",
                        f"{base}/v2/{repo}/blobs/uploads/?digest={digest_of(blob)}", data=blob)
                    assert status == 201, (status, body)
                    ledger.blobs[(repo, digest_of(blob))] = blob
                document: dict[str, Any] = {
                    "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config),
                               "size": len(config)},
                    "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(layer),
                                "size": len(layer)}]}
                if op == "referrer" and images:
                    subject, size = rng.choice(images)
                    document["artifactType"] = "application/vnd.example.sbom"
                    document["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject,
                                           "size": size}
                    reference = digest_of(json.dumps(document).encode())
                else:
                    reference = f"t{rng.randint(0, 2)}"
                digest = await _put_manifest(session, base, ledger, repo, reference, document)
                if digest and "subject" not in document:
                    images.append((digest, len(ledger.manifests[digest][1])))
            elif op == "index" and images:
                children = rng.sample(images, min(len(images), 2))
                document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                    {"mediaType": OCI_MANIFEST, "digest": d, "size": s,
                     "platform": {"os": "linux", "architecture": f"arch{i}"}}
                    for i, (d, s) in enumerate(children)]}
                await _put_manifest(session, base, ledger, repo, f"i{rng.randint(0, 1)}",
                                    document)
            elif op == "untag":
                tag = f"t{rng.randint(0, 2)}"
                possible = ledger.tags.get((repo, tag), {None})
                if possible == {None}:
                    continue
                try:
                    status, _, body = await _ask(session, "DELETE",
                                                 f"{base}/v2/{repo}/manifests/{tag}")
                except Down:
                    ledger.tag_maybe(repo, tag, None)
                    continue
                if status == 202 or (status == 404 and None in possible):
                    ledger.tag_acked(repo, tag, None)  # (an unanswered untag had landed)
                else:
                    ledger.refused.append(f"DELETE {repo}:{tag} {status} {body[:300]!r}, "
                                          f"the tag may have been {possible}")
        except Down:
            await asyncio.sleep(0.1)  # an unanswered request acknowledged nothing


async def _verify_ledger(session: aiohttp.ClientSession, base: str, ledger: Ledger
                         ) -> Counter[str]:
    seen: Counter[str] = Counter()
    stop = time.monotonic() + 60
    for (repo, digest), data in ledger.blobs.items():
        status, _, body = await _patient(session, "GET", f"{base}/v2/{repo}/blobs/{digest}",
                                         stop)
        assert (status, body == data) == (200, True), (repo, digest, status, body[:300])
        seen["acknowledged blobs intact"] += 1
    for digest, (repo, data) in ledger.manifests.items():
        status, _, body = await _patient(session, "GET", f"{base}/v2/{repo}/manifests/{digest}",
                                         stop, headers={"Accept": f"{OCI_MANIFEST},{OCI_INDEX}"})
        assert (status, body) == (200, data), (repo, digest, status, body[:300])
        seen["acknowledged manifests intact"] += 1
    for (repo, tag), possible in ledger.tags.items():
        status, headers, body = await _patient(
            session, "HEAD", f"{base}/v2/{repo}/manifests/{tag}", stop,
            headers={"Accept": f"{OCI_MANIFEST},{OCI_INDEX}"})
        now = headers.get("Docker-Content-Digest") if status == 200 else None
        assert status in (200, 404) and now in possible, (repo, tag, status, now, possible)
        seen["tags where the last acknowledged change left them"] += 1
    for (repo, subject), expected in ledger.referrers.items():
        status, _, body = await _patient(session, "GET",
                                         f"{base}/v2/{repo}/referrers/{subject}", stop)
        listed = {m["digest"] for m in json.loads(body)["manifests"]}
        assert status == 200 and expected <= listed, (repo, subject, expected - listed)
        seen["acknowledged referrers listed"] += 1
    for repo in sorted({repo for repo, _ in ledger.manifests.values()}):
        status, _, body = await _patient(session, "GET", f"{base}/v2/{repo}/tags/list", stop)
        assert status == 200, body
        for tag in json.loads(body)["tags"] or []:
            status, _, text = await _patient(session, "GET", f"{base}/v2/{repo}/manifests/{tag}",
                                             stop, headers={"Accept": f"{OCI_MANIFEST},"
                                                                      f"{OCI_INDEX}"})
            assert status == 200, (repo, tag, status, text[:300])
            seen["listed tags readable"] += 1
    return seen


# The schedule's seed (kills: which process, when, for how long; the clients' choices): a
# failure names it, and the same seed replays the same schedule.
CRASH_SEED = 1


async def test_seeded_kills_of_either_process_lose_nothing_acknowledged(
        pair: tuple[EmulatorProcess, GatewayProcess], long_run: bool) -> None:
    """kill -9s of the emulator or the gateway, at moments a seeded schedule picks, under
    four clients pushing every kind of thing (chunked uploads resumed from their Range,
    monolithic ones, mounts, images, indexes, referrers, tag moves, untags). Every answer a
    client got holds afterwards, and nothing is left half-stored."""
    emulator, gateway = pair
    seed = CRASH_SEED
    ledger = Ledger()
    schedule = random.Random(seed)
    kills: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        mountable = []
        for _ in range(3):
            data = os.urandom(schedule.randint(1000, 200_000))
            status, _, body = await _ask(session, "POST", f"{gateway.url}/v2/{BASE}/blobs/"
                                         f"uploads/?digest={digest_of(data)}", data=data)
            assert status == 201, body
            ledger.blobs[(BASE, digest_of(data))] = data
            mountable.append((digest_of(data), len(data)))
        chaos = asyncio.Event()
        stop = time.monotonic() + (90 if long_run else 45)
        clients = [asyncio.create_task(_crash_client(session, gateway.url, ledger, n, seed,
                                                     chaos, stop, mountable))
                   for n in range(4)]
        for _ in range(12 if long_run else 4):
            await asyncio.sleep(schedule.uniform(0.2, 1.5))
            victim = schedule.choice(["emulator", "gateway"])
            kills.append(victim)
            if victim == "emulator":
                emulator.kill9()
                await asyncio.sleep(schedule.uniform(0.0, 0.6))
                emulator.start()
            else:
                gateway.kill9()
                await asyncio.sleep(schedule.uniform(0.0, 0.3))
                gateway.start()
        await asyncio.sleep(1.0)
        chaos.set()
        await asyncio.gather(*clients)
        seen = await _verify_ledger(session, gateway.url, ledger)
    print(f"\nseed {seed}, kills {kills}: {dict(seen)}, uploads {dict(ledger.uploads)}")
    assert ledger.refused == []
    assert seen["acknowledged manifests intact"] >= 1 and len(kills) >= 4
    gateway.stop()
    emulator.stop()
    check_store(emulator.data_dir)  # the emulator's database and files agree
    assert list((gateway.data_dir / "sessions").glob("*.tmp")) == []
    assert "Traceback" not in log_text(gateway, emulator)
