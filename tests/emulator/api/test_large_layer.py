"""A 1 GiB layer in 10 MiB parts: the emulator's memory stays flat whatever the blob size.

Parts go over plain HTTP in the exact AWS JSON 1.1 shape botocore sends (base64 member in a
JSON object, SigV4-style Authorization header), built cheaply: one random block whose last
four bytes are a part counter, so each part's base64 is the block's (computed once) plus
eight characters.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from typing import Any

import aiohttp
import pytest

from tests.support.emulator import EmulatorProcess, ecr_client, signed_headers

MiB = 1024 * 1024
PART = 10 * MiB
TOTAL = 1024 * MiB
RSS_LIMIT = 250 * MiB


async def call(session: aiohttp.ClientSession, url: str, action: str, body: bytes) -> Any:
    headers = signed_headers(url, body, {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"AmazonEC2ContainerRegistry_V20150921.{action}"})
    async with session.post(url, data=body, headers=headers) as r:
        answer = json.loads(await r.read())
        assert r.status == 200, answer
        return answer


@pytest.mark.slow
async def test_one_gib_layer_keeps_memory_flat(emulator: EmulatorProcess) -> None:
    async with ecr_client(emulator.url) as ecr:
        await ecr.create_repository(repositoryName="big/layer")
        upload_id = (await ecr.initiate_layer_upload(repositoryName="big/layer"))["uploadId"]
    block = os.urandom(PART - 4)  # len % 3 == 0, so base64 pieces concatenate
    encoded = base64.b64encode(block)
    hasher = hashlib.sha256()
    parts = -(-TOTAL // PART)
    started = time.monotonic()
    rss_early = 0
    async with aiohttp.ClientSession() as session:
        for n in range(parts):
            first = n * PART
            size = min(PART, TOTAL - first)
            body_len = size - 4
            counter = n.to_bytes(4, "big")
            hasher.update(memoryview(block)[:body_len])
            hasher.update(counter)
            blob_b64 = encoded[:body_len // 3 * 4] + base64.b64encode(counter)
            head = json.dumps({"repositoryName": "big/layer", "uploadId": upload_id,
                               "partFirstByte": first, "partLastByte": first + size - 1})
            body = b"".join([head[:-1].encode(), b', "layerPartBlob": "', blob_b64, b'"}'])
            answer = await call(session, emulator.url, "UploadLayerPart", body)
            assert answer["lastByteReceived"] == first + size - 1
            if n == 4:
                rss_early = emulator.peak_rss()
        layer_digest = "sha256:" + hasher.hexdigest()
        done = await call(session, emulator.url, "CompleteLayerUpload", json.dumps({
            "repositoryName": "big/layer", "uploadId": upload_id,
            "layerDigests": [layer_digest]}).encode())
    elapsed = time.monotonic() - started
    assert done["layerDigest"] == layer_digest
    peak = emulator.peak_rss()
    assert peak < RSS_LIMIT, f"peak RSS {peak / MiB:.0f} MiB"
    assert peak - rss_early < 64 * MiB, (rss_early / MiB, peak / MiB)  # flat, not growing
    blob = emulator.data_dir / "blobs" / "sha256" / layer_digest[7:9] / layer_digest[7:]
    assert blob.stat().st_size == TOTAL
    print(f"1 GiB in {elapsed:.1f} s ({TOTAL / MiB / elapsed:.0f} MiB/s), "
          f"peak RSS {peak / MiB:.0f} MiB")
