"""kill -9 in the middle of uploads and pushes: every acknowledged write survives, uploads
resume from lastValidByteReceived, and the database and blob store agree afterwards."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.emulator.api.helpers import digest, image_manifest, push_layer
from tests.support.emulator import EmulatorProcess, ecr_client

# Small parts (the 5 MiB minimum lowered) so that many requests are in flight at the kill.
ENV = {"ECR_EMULATOR_MIN_PART_SIZE": "1"}
PART = 64 * 1024
NO_RETRY: dict[str, Any] = {"retries": {"total_max_attempts": 1}, "max_pool_connections": 16}


class Killed(Exception):
    """The emulator went away under a request."""


def check_store(data_dir: Path) -> None:
    """The database is intact and matches the files: every layer's blob exists and hashes to
    its digest, no blob lacks a layer, every upload file is exactly its accepted bytes."""
    db = sqlite3.connect(data_dir / "ecr.sqlite3")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        layers = {row[0]: row[1] for row in db.execute("SELECT DISTINCT digest, size FROM layers")}
        uploads = dict(db.execute("SELECT id, received FROM uploads").fetchall())
        for upload_id, received in uploads.items():
            (parts_total,) = db.execute("SELECT coalesce(sum(size), 0) FROM upload_parts"
                                        " WHERE upload_id = ?", (upload_id,)).fetchone()
            assert parts_total == received
    finally:
        db.close()
    blobs = {f"sha256:{p.name}": p for p in (data_dir / "blobs" / "sha256").glob("*/*")}
    assert set(blobs) == set(layers)
    for layer_digest, path in blobs.items():
        data = path.read_bytes()
        assert len(data) == layers[layer_digest]
        assert digest(data) == layer_digest
    for path in (data_dir / "uploads").iterdir():
        assert path.name in uploads
        assert path.stat().st_size == uploads[path.name]


async def next_byte(ecr: Any, repo: str, upload_id: str) -> int | None:
    """Where the upload resumes (lastValidByteReceived + 1), or None if it is gone."""
    try:
        await ecr.upload_layer_part(repositoryName=repo, uploadId=upload_id,
                                    partFirstByte=2**40, partLastByte=2**40, layerPartBlob=b"?")
    except ecr.exceptions.InvalidLayerPartException as error:
        return int(error.response["lastValidByteReceived"]) + 1
    except ecr.exceptions.UploadNotFoundException:
        return None
    raise AssertionError("a part far beyond the upload's end was accepted")


@pytest.mark.slow
async def test_kill_during_part_uploads(tmp_path: Path) -> None:
    emulator = EmulatorProcess(tmp_path / "ecr", env=ENV)
    emulator.start()
    repo = "crash/parts"
    layers = [os.urandom(48 * PART + 100) for _ in range(6)]
    acked: dict[int, int] = {}          # upload -> bytes acknowledged
    completed: set[int] = set()         # uploads whose completion was acknowledged
    upload_ids: dict[int, str] = {}
    acks = 0
    try:
        async with ecr_client(emulator.url, **NO_RETRY) as ecr:
            await ecr.create_repository(repositoryName=repo)
            for n in range(len(layers)):
                upload_ids[n] = (await ecr.initiate_layer_upload(repositoryName=repo))["uploadId"]

            async def upload(n: int) -> None:
                nonlocal acks
                data = layers[n]
                try:
                    for first in range(0, len(data), PART):
                        chunk = data[first:first + PART]
                        await ecr.upload_layer_part(
                            repositoryName=repo, uploadId=upload_ids[n], partFirstByte=first,
                            partLastByte=first + len(chunk) - 1, layerPartBlob=chunk)
                        acked[n] = first + len(chunk)
                        acks += 1
                        if acks == 150:  # about half way: others are mid-request
                            emulator.kill9()
                    if n % 2 == 0:  # half of them also complete
                        await ecr.complete_layer_upload(repositoryName=repo,
                                                        uploadId=upload_ids[n],
                                                        layerDigests=[digest(data)])
                        completed.add(n)
                except Exception as error:  # connection refused / reset by the kill
                    if emulator.running:
                        raise
                    assert not isinstance(error, ClientError), error

            await asyncio.gather(*(upload(n) for n in range(len(layers))))
        assert not emulator.running, "the kill came too late to interrupt anything"

        emulator.start()
        async with ecr_client(emulator.url, **NO_RETRY) as ecr:
            for n, data in enumerate(layers):
                resume = await next_byte(ecr, repo, upload_ids[n])
                if resume is None:  # completed before the kill (acknowledged or not)
                    check = await ecr.batch_check_layer_availability(
                        repositoryName=repo, layerDigests=[digest(data)])
                    assert check["layers"][0]["layerAvailability"] == "AVAILABLE"
                    continue
                assert n not in completed
                assert acked.get(n, 0) <= resume <= len(data)
                for first in range(resume, len(data), PART):
                    chunk = data[first:first + PART]
                    await ecr.upload_layer_part(repositoryName=repo, uploadId=upload_ids[n],
                                                partFirstByte=first,
                                                partLastByte=first + len(chunk) - 1,
                                                layerPartBlob=chunk)
                done = await ecr.complete_layer_upload(repositoryName=repo,
                                                       uploadId=upload_ids[n],
                                                       layerDigests=[digest(data)])
                assert done["layerDigest"] == digest(data)
        emulator.stop()
        check_store(emulator.data_dir)
    finally:
        emulator.stop()


@pytest.mark.slow
async def test_kill_during_put_image(tmp_path: Path) -> None:
    emulator = EmulatorProcess(tmp_path / "ecr", env=ENV)
    emulator.start()
    repo = "crash/images"
    config, layer = b'{"os":"linux"}', os.urandom(1000)
    acked: dict[str, str] = {}          # tag -> manifest acknowledged
    try:
        async with ecr_client(emulator.url, **NO_RETRY) as ecr:
            await ecr.create_repository(repositoryName=repo)
            for blob in (config, layer):
                await push_layer(ecr, repo, blob)

            async def push(worker: int) -> None:
                try:
                    for i in range(200):
                        tag = f"w{worker}-{i}"
                        text = image_manifest(config, [layer], annotations={"tag": tag})
                        await ecr.put_image(repositoryName=repo, imageManifest=text,
                                            imageTag=tag)
                        acked[tag] = text
                        if len(acked) == 120:
                            emulator.kill9()
                except Exception as error:
                    if emulator.running:
                        raise
                    assert not isinstance(error, ClientError), error

            await asyncio.gather(*(push(w) for w in range(6)))
        assert not emulator.running

        emulator.start()
        async with ecr_client(emulator.url, **NO_RETRY) as ecr:
            tags = list(acked)
            for start in range(0, len(tags), 100):
                batch = tags[start:start + 100]
                got = await ecr.batch_get_image(repositoryName=repo,
                                                imageIds=[{"imageTag": t} for t in batch])
                assert got["failures"] == []
                for image in got["images"]:
                    tag = image["imageId"]["imageTag"]
                    assert image["imageManifest"] == acked[tag]
                    assert image["imageId"]["imageDigest"] == digest(acked[tag])
            listed = (await ecr.list_images(repositoryName=repo, maxResults=1000))["imageIds"]
            assert len(listed) >= len(acked)
            # Whatever else landed (written, not acknowledged) is whole as well.
            everything = await ecr.batch_get_image(repositoryName=repo,
                                                   imageIds=listed[-100:])
            for image in everything["images"]:
                assert digest(image["imageManifest"]) == image["imageId"]["imageDigest"]
                assert json.loads(image["imageManifest"])["layers"][0]["digest"] == digest(layer)
        emulator.stop()
        check_store(emulator.data_dir)
    finally:
        emulator.stop()


async def test_restart_keeps_everything(tmp_path: Path) -> None:
    """A clean restart (SIGTERM) keeps repositories, layers, images and open uploads."""
    with EmulatorProcess(tmp_path / "ecr", env=ENV) as emulator:
        await restart_scenario(emulator)


async def test_page_cache_mode_survives_a_killed_process(tmp_path: Path) -> None:
    """ECR_EMULATOR_DURABLE=0 (the benchmark's no-fsync emulator) skips fsync, and still
    loses nothing to a kill -9: the page cache outlives the process."""
    with EmulatorProcess(tmp_path / "ecr", env={**ENV, "ECR_EMULATOR_DURABLE": "0"}) as emu:
        await restart_scenario(emu, kill=True)


async def restart_scenario(emulator: EmulatorProcess, *, kill: bool = False) -> None:
    repo = "restart/app"
    layer = os.urandom(5000)
    async with ecr_client(emulator.url) as ecr:
        await ecr.create_repository(repositoryName=repo)
        for blob in (b"{}", layer):
            await push_layer(ecr, repo, blob)
        text = image_manifest(b"{}", [layer])
        await ecr.put_image(repositoryName=repo, imageManifest=text, imageTag="v1")
        upload_id = (await ecr.initiate_layer_upload(repositoryName=repo))["uploadId"]
        await ecr.upload_layer_part(repositoryName=repo, uploadId=upload_id, partFirstByte=0,
                                    partLastByte=2, layerPartBlob=b"abc")
    url = emulator.url
    if kill:
        emulator.kill9()
        assert emulator.start() == url
    else:
        assert emulator.restart() == url
    async with ecr_client(emulator.url) as ecr:
        got = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])
        assert got["images"][0]["imageManifest"] == text
        assert await next_byte(ecr, repo, upload_id) == 3
        await ecr.upload_layer_part(repositoryName=repo, uploadId=upload_id, partFirstByte=3,
                                    partLastByte=5, layerPartBlob=b"def")
        done = await ecr.complete_layer_upload(repositoryName=repo, uploadId=upload_id,
                                               layerDigests=[digest(b"abcdef")])
        assert done["layerDigest"] == "sha256:" + hashlib.sha256(b"abcdef").hexdigest()
    emulator.stop()
    check_store(emulator.data_dir)
