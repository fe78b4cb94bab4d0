"""Uploads a caller starts and never completes: ECR has no call to cancel one, so each would
keep its parts on disk for ever. One idle for ``ECR_EMULATOR_UPLOAD_LIFETIME`` seconds (since
its InitiateLayerUpload or its last part) ends, its file deleted, and calls naming it get
UploadNotFoundException; an upload still receiving parts outlives that lifetime and
completes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from tests.emulator.api.helpers import MiB, digest
from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.polling import until

LIFETIME = 4
ENV = {"ECR_EMULATOR_UPLOAD_LIFETIME": str(LIFETIME), "ECR_EMULATOR_MIN_PART_SIZE": "1"}
NO_RETRY: dict[str, Any] = {"retries": {"total_max_attempts": 1}}
ABANDONED = 6
PART = MiB


def upload_files(data_dir: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in (data_dir / "uploads").iterdir()}


def open_upload_files(emulator: EmulatorProcess, data_dir: Path) -> int:
    """The emulator's file descriptors open on upload files."""
    uploads = str((data_dir / "uploads").resolve())
    count = 0
    for fd in Path(f"/proc/{emulator.pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith(uploads + "/")
        except FileNotFoundError:  # closed meanwhile
            continue
    return count


async def test_abandoned_uploads_expire_and_free_their_files(tmp_path: Path) -> None:
    data_dir = tmp_path / "ecr"
    repo = "expiry/app"
    with EmulatorProcess(data_dir, env=ENV) as emulator:
        async with ecr_client(emulator.url, **NO_RETRY) as ecr:
            await ecr.create_repository(repositoryName=repo)

            async def start(parts: int) -> str:
                upload_id = str((await ecr.initiate_layer_upload(
                    repositoryName=repo))["uploadId"])
                for n in range(parts):
                    await ecr.upload_layer_part(
                        repositoryName=repo, uploadId=upload_id, partFirstByte=n * PART,
                        partLastByte=(n + 1) * PART - 1, layerPartBlob=os.urandom(PART))
                return upload_id

            abandoned = [await start(2) for _ in range(ABANDONED)]
            never_written = await start(0)
            held = upload_files(data_dir)
            assert {held[upload_id] for upload_id in abandoned} == {2 * PART}
            assert open_upload_files(emulator, data_dir) == 0

            # One upload keeps receiving parts, one a second, for twice the lifetime.
            layer = os.urandom(2 * LIFETIME * PART)
            busy = str((await ecr.initiate_layer_upload(repositoryName=repo))["uploadId"])
            for first in range(0, len(layer), PART):
                await asyncio.sleep(1 if first else 0)
                await ecr.upload_layer_part(repositoryName=repo, uploadId=busy,
                                            partFirstByte=first,
                                            partLastByte=first + PART - 1,
                                            layerPartBlob=layer[first:first + PART])
            done = await ecr.complete_layer_upload(repositoryName=repo, uploadId=busy,
                                                   layerDigests=[digest(layer)])
            assert done["layerDigest"] == digest(layer)

            assert await until(lambda: not upload_files(data_dir), 2 * LIFETIME), \
                "idle uploads kept their parts"

            for upload_id in [*abandoned, never_written]:
                with pytest.raises(ecr.exceptions.UploadNotFoundException):
                    await ecr.upload_layer_part(
                        repositoryName=repo, uploadId=upload_id, partFirstByte=2 * PART,
                        partLastByte=3 * PART - 1, layerPartBlob=os.urandom(PART))
                with pytest.raises(ecr.exceptions.UploadNotFoundException):
                    await ecr.complete_layer_upload(repositoryName=repo, uploadId=upload_id,
                                                    layerDigests=[digest(b"x")])
            assert upload_files(data_dir) == {}  # the refused parts left nothing behind
            expired = {entry["uploadId"] for entry in emulator.requests("UploadExpire")}
            assert expired == {*abandoned, never_written}
