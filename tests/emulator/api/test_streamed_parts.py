"""UploadLayerPart's bytes reach the upload's file while the request body still arrives, and
a part refused once its body has ended (a signature that does not cover it) is cut off again:
the upload stands where it stood and the same part, sent right, is accepted."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.emulator.api.helpers import digest
from tests.support.emulator import EmulatorProcess, ecr_client

MiB = 1024 * 1024
TARGET = "AmazonEC2ContainerRegistry_V20150921.UploadLayerPart"


def signed_part(emulator: EmulatorProcess, repo: str, upload_id: str,
                data: bytes) -> tuple[dict[str, str], bytes]:
    """The headers and body of an UploadLayerPart, signed as botocore signs it (the blob last)."""
    body = orjson.dumps({"repositoryName": repo, "uploadId": upload_id, "partFirstByte": 0,
                         "partLastByte": len(data) - 1,
                         "layerPartBlob": base64.b64encode(data).decode()})
    request = AWSRequest("POST", emulator.url + "/", data=body, headers={
        "X-Amz-Target": TARGET, "Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(Credentials(emulator.access_key_id, emulator.secret_access_key), "ecr",
              emulator.region).add_auth(request)
    return dict(request.headers.items()), body


def file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


async def wait_for_size(path: Path, at_least: int, patience: float = 10.0) -> int:
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        size = file_size(path)
        if size >= at_least or asyncio.get_running_loop().time() > deadline:
            return size
        await asyncio.sleep(0.02)


async def send_in_two(emulator: EmulatorProcess, headers: dict[str, str], body: bytes,
                      upload_file: Path) -> tuple[int, dict[str, object], int]:
    """Send the first half of ``body``, wait for the upload's file to grow, send the rest;
    the answer's status and JSON, and the file's size seen between the halves."""
    half = len(body) // 2
    seen: list[int] = []

    async def stream() -> AsyncIterator[bytes]:
        yield body[:half]
        seen.append(await wait_for_size(upload_file, 1 * MiB))
        yield body[half:]

    async with aiohttp.ClientSession() as http, http.post(
            emulator.url + "/", data=stream(),
            headers={**headers, "Content-Length": str(len(body))}) as response:
        return response.status, await response.json(content_type=None), seen[0]


async def test_a_part_streams_to_its_file_and_a_refused_one_leaves_no_trace(
        emulator: EmulatorProcess, repo: str) -> None:
    data = os.urandom(6 * MiB)
    async with ecr_client(emulator.url) as ecr:
        await ecr.create_repository(repositoryName=repo)
        upload_id = (await ecr.initiate_layer_upload(repositoryName=repo))["uploadId"]
        upload_file = emulator.data_dir / "uploads" / upload_id

        # The signature covers the original body; the body sent has one byte changed late in
        # the blob (still valid base64), after more than a MiB of it has been written.
        headers, body = signed_part(emulator, repo, upload_id, data)
        spot = len(body) - 1000
        tampered = body[:spot] + (b"B" if body[spot:spot + 1] != b"B" else b"C") + body[
            spot + 1:]
        status, answer, size_midway = await send_in_two(emulator, headers, tampered,
                                                        upload_file)
        assert size_midway >= 1 * MiB  # on its way to disk before the body ended
        assert (status, answer["__type"]) == (400, "InvalidSignatureException")
        assert file_size(upload_file) == 0  # cut back: the part never counted

        # The upload is unchanged: the same part, sent right, starts at byte 0 and counts.
        status, answer, _ = await send_in_two(emulator, headers, body, upload_file)
        assert (status, answer["lastByteReceived"]) == (200, len(data) - 1)
        assert file_size(upload_file) == len(data)
        done = await ecr.complete_layer_upload(repositoryName=repo, uploadId=upload_id,
                                               layerDigests=[digest(data)])
        assert done["layerDigest"] == digest(data)
    assert not upload_file.exists()
    blob = emulator.data_dir / "blobs" / "sha256" / digest(data)[7:9] / digest(data)[7:]
    assert blob.read_bytes() == data


async def test_a_trickled_part_holds_its_upload_no_longer_than_the_body_deadline(
        tmp_path: Path, repo: str) -> None:
    """A caller that knows an access key id and an upload id, not the secret, starts a part
    and trickles its body: the part's bytes stream under the upload's lock, and the signature
    can only be judged at the end. The body deadline (grace 1 s, then 1 MiB/s) cuts it off
    with 408 RequestTimeoutException, and the owner's part goes through (before: it waited
    for as long as the trickle went on)."""
    env = {"ECR_EMULATOR_REQUEST_BODY_GRACE_SECONDS": "1",
           "ECR_EMULATOR_REQUEST_BODY_MIN_RATE": str(MiB)}
    data = os.urandom(1 * MiB)
    with EmulatorProcess(tmp_path / "ecr", env=env) as emulator:
        async with ecr_client(emulator.url, retries={"total_max_attempts": 1}) as ecr:
            await ecr.create_repository(repositoryName=repo)
            upload_id = (await ecr.initiate_layer_upload(repositoryName=repo))["uploadId"]
            headers, body = signed_part(emulator, repo, upload_id, data)
            forged = dict(headers)
            forged["Authorization"] = forged["Authorization"][:-8] + "00000000"
            trickling = asyncio.Event()

            async def trickle() -> AsyncIterator[bytes]:
                yield body[:200_000]  # past the members before the blob: the lock is taken
                trickling.set()
                for i in range(200_000, len(body)):
                    await asyncio.sleep(0.5)
                    yield body[i:i + 1]

            async with aiohttp.ClientSession() as http:
                async def forger() -> tuple[int, object]:
                    async with http.post(emulator.url + "/", data=trickle(), headers={
                            **forged, "Content-Length": str(len(body))}) as response:
                        return response.status, await response.json(content_type=None)

                attack = asyncio.create_task(forger())
                await asyncio.wait_for(trickling.wait(), 10)
                await asyncio.sleep(0.3)
                started = asyncio.get_running_loop().time()

                async def owner() -> tuple[int, dict[str, object]]:
                    async with http.post(emulator.url + "/", data=body,
                                         headers=headers) as response:
                        return response.status, await response.json(content_type=None)

                status, answer = await asyncio.wait_for(owner(), 15)
                assert (status, answer.get("lastByteReceived")) == (200, len(data) - 1), answer
                waited = asyncio.get_running_loop().time() - started
                status, refusal = await asyncio.wait_for(attack, 10)
            assert (status, refusal["__type"]) == (408, "RequestTimeoutException")  # type: ignore[index]
            assert waited < 8, waited  # the deadline: 1 s + 1.4 MB at 1 MiB/s
            done = await ecr.complete_layer_upload(repositoryName=repo, uploadId=upload_id,
                                                   layerDigests=[digest(data)])
            assert done["layerDigest"] == digest(data)
