"""UploadLayerPart's part sizes, as the API reference and the service quotas page give them.

The API reference: "The maximum size of each image layer part can be 20971520 bytes (about
20MB)", and InvalidLayerPartException is "The layer part size isn't valid, or the first byte
specified isn't consecutive to the last byte of a previous layer part upload". The quotas
page says 10 MiB: the emulator's limit is a setting, so that clients can be held to either.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.emulator import EmulatorProcess, ecr_client

MiB = 1024 * 1024


async def _part(ecr: Any, repo: str, upload_id: str, first: int, data: bytes) -> Any:
    return await ecr.upload_layer_part(repositoryName=repo, uploadId=upload_id,
                                       partFirstByte=first, partLastByte=first + len(data) - 1,
                                       layerPartBlob=data)


async def test_a_part_past_the_api_limit_is_refused_and_changes_nothing(ecr: Any,
                                                                        repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    upload_id = (await ecr.initiate_layer_upload(repositoryName=repo))["uploadId"]
    largest = os.urandom(20 * MiB)
    assert (await _part(ecr, repo, upload_id, 0, largest))["lastByteReceived"] == 20 * MiB - 1
    with pytest.raises(ecr.exceptions.InvalidParameterException):  # the model's length
        await _part(ecr, repo, upload_id, 20 * MiB, os.urandom(20 * MiB + 1))
    with pytest.raises(ecr.exceptions.InvalidLayerPartException) as refused:
        await _part(ecr, repo, upload_id, 0, b"again")
    assert refused.value.response["lastValidByteReceived"] == 20 * MiB - 1


async def test_a_part_past_the_configured_size_is_an_invalid_part(tmp_path: Path) -> None:
    env = {"ECR_EMULATOR_MAX_PART_SIZE": str(10 * MiB)}  # the service quotas page's figure
    with EmulatorProcess(tmp_path / "ecr", env=env) as emulator:
        async with ecr_client(emulator.url, retries={"total_max_attempts": 1}) as ecr:
            repo = "emu/quota-parts"
            await ecr.create_repository(repositoryName=repo)
            upload_id = (await ecr.initiate_layer_upload(repositoryName=repo))["uploadId"]
            first, second = os.urandom(10 * MiB), os.urandom(10 * MiB)
            await _part(ecr, repo, upload_id, 0, first)
            with pytest.raises(ClientError) as refused:
                await _part(ecr, repo, upload_id, 10 * MiB, second + b"!")
            assert refused.value.response["Error"]["Code"] == "InvalidLayerPartException"
            assert refused.value.response["lastValidByteReceived"] == 10 * MiB - 1
            await _part(ecr, repo, upload_id, 10 * MiB, second)  # resumed where it stood
            digest = "sha256:" + hashlib.sha256(first + second).hexdigest()
            done = await ecr.complete_layer_upload(repositoryName=repo, uploadId=upload_id,
                                                   layerDigests=[digest])
            assert done["layerDigest"] == digest
