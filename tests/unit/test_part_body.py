"""UploadLayerPart bodies built by gateway.ecr.partbody are the JSON documents botocore would
send (same members, same base64), of the size and sha256 announced for SigV4, whatever
chunks the part arrived in."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os

from gateway.ecr import partbody

MEMBERS = {"registryId": "123456789012", "repositoryName": "team/app", "uploadId": "u-1",
           "partFirstByte": 10_485_760, "partLastByte": 20_971_519}


def _joined(body: partbody.Body) -> bytes:
    return b"".join(body.pieces())


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
    assert streamed == _joined(body) and len(streamed) == body.size


async def test_a_prepared_part_is_rebuilt_for_other_members() -> None:
    data = os.urandom(6 * 1024 * 1024 + 1)
    part = partbody.EncodedPart(data, MEMBERS)
    body = await part.prepare()
    assert part.data() == data and len(part) == len(data)
    assert await part.body_for(MEMBERS) is body
    other = await part.body_for({**MEMBERS, "uploadId": "u-2"})
    assert json.loads(_joined(other))["uploadId"] == "u-2"
    assert other.sha256 != body.sha256


async def test_a_part_given_as_the_chunks_it_arrived_in() -> None:
    """Chunks of any sizes (1 byte, unaligned to base64's 3-byte groups) encode as the
    joined bytes would, and come back whole after release."""
    data = os.urandom(5 * 1024 * 1024 + 7)
    cuts = [0, 1, 2, 5, 65536, 65537, 3_000_000, 3_000_001, len(data)]
    chunks = [memoryview(data)[a:b] for a, b in itertools.pairwise(cuts)]
    body = partbody.build(MEMBERS, chunks)
    assert base64.b64decode(json.loads(_joined(body))["layerPartBlob"]) == data
    assert body.sha256 == partbody.build(MEMBERS, data).sha256
    part = partbody.EncodedPart(chunks, MEMBERS)
    assert len(part) == len(data) and part.data() == data


def test_a_body_hashed_as_its_bytes_arrive_is_the_built_one() -> None:
    """BodyHash fed the part in any number of calls (splits unaligned to base64's 3-byte
    groups, empty calls) gives the size and sha256 of the document built at once."""
    data = os.urandom(3 * 1024 * 1024 + 2)
    built = partbody.build(MEMBERS, data)
    for cuts in ([0, len(data)], [0, 1, 2, 2, 4, 1_000_000, 2_000_002, len(data)],
                 [0, 3, 196_609, len(data) - 1, len(data)]):
        hashing = partbody.BodyHash(partbody.opening(MEMBERS))
        for a, b in itertools.pairwise(cuts):
            hashing.update([memoryview(data)[a:b]])
        assert hashing.finish(partbody.CLOSING) == (built.size, built.sha256)
