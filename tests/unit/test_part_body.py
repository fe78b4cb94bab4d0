"""UploadLayerPart bodies built by gateway.ecr.partbody are the JSON documents botocore would
send (same members, same base64), hashed correctly for SigV4, and a released part still
gives its bytes back."""

from __future__ import annotations

import base64
import hashlib
import json
import os

from gateway.ecr import partbody

MEMBERS = {"registryId": "123456789012", "repositoryName": "team/app", "uploadId": "u-1",
           "partFirstByte": 10_485_760, "partLastByte": 20_971_519}


def _joined(body: partbody.Body) -> bytes:
    return b"".join(body.pieces)


def test_body_is_the_document_botocore_would_send() -> None:
    part = os.urandom(7 * 1024 * 1024 + 5)  # several slices, the last one padded
    body = partbody.build(MEMBERS, part)
    raw = _joined(body)
    assert json.loads(raw) == {**MEMBERS, "layerPartBlob": base64.b64encode(part).decode()}
    assert body.size == len(raw)
    assert body.sha256 == hashlib.sha256(raw).hexdigest()


def test_a_document_with_no_other_member() -> None:
    body = partbody.build({}, b"\x00\x01\x02\x03")
    assert json.loads(_joined(body)) == {"layerPartBlob": "AAECAw=="}


async def test_stream_sends_every_byte_in_order() -> None:
    body = partbody.build(MEMBERS, os.urandom(1024 * 1024))
    streamed = b"".join([bytes(chunk) async for chunk in body.stream()])
    assert streamed == _joined(body)


async def test_released_part_decodes_its_bytes_back() -> None:
    data = os.urandom(6 * 1024 * 1024 + 1)
    part = partbody.EncodedPart(data, MEMBERS)
    body = await part.prepare()
    part.release()
    assert part.data() == data
    assert len(part) == len(data)
    # A call that sends other members gets a body built for them.
    other = await part.body_for({**MEMBERS, "uploadId": "u-2"})
    assert json.loads(_joined(other))["uploadId"] == "u-2"
    assert other.sha256 != body.sha256
