"""Streaming parse of JSON bodies whose blob member is decoded as it arrives."""

from __future__ import annotations

import base64
import json
import os
import random
from collections.abc import AsyncIterator

import pytest

from ecr_emulator import jsonbody
from ecr_emulator.jsonbody import BodyError


async def chunks(body: bytes, sizes: list[int] | int) -> AsyncIterator[bytes]:
    if isinstance(sizes, int):
        sizes = [sizes]
    pos = i = 0
    while pos < len(body):
        size = sizes[i % len(sizes)]
        yield body[pos:pos + size]
        pos += size
        i += 1


def part_body(blob: bytes, *, first: bool = False, escape_slash: bool = False) -> bytes:
    encoded = base64.b64encode(blob).decode()
    if escape_slash:
        encoded = encoded.replace("/", "\\/")
    fields = {"repositoryName": "a/b", "partFirstByte": 0, "partLastByte": len(blob) - 1}
    text = json.dumps(fields)
    member = f'"layerPartBlob": "{encoded}"'
    if first:
        return ("{" + member + ", " + text[1:]).encode()
    return (text[:-1] + ", " + member + "}").encode()


@pytest.mark.parametrize("sizes", [1, 3, 7, 64, 1000, 65536, [5, 1, 9000, 2]])
@pytest.mark.parametrize("first", [False, True])
async def test_blob_decoded_across_any_chunking(sizes: list[int] | int, first: bool) -> None:
    blob = os.urandom(10_001)
    params = await jsonbody.parse(chunks(part_body(blob, first=first), sizes), "layerPartBlob")
    assert params == {"repositoryName": "a/b", "partFirstByte": 0, "partLastByte": 10_000,
                      "layerPartBlob": blob}


async def test_escaped_slashes() -> None:
    blob = bytes(range(256)) * 40  # plenty of "/" in its base64
    body = part_body(blob, escape_slash=True)
    assert b"\\/" in body
    for size in (1, 2, 3, 100):
        params = await jsonbody.parse(chunks(body, size), "layerPartBlob")
        assert params["layerPartBlob"] == blob


@pytest.mark.parametrize("blob", [b"", b"a", b"ab", b"abc"])
async def test_short_blobs(blob: bytes) -> None:
    params = await jsonbody.parse(chunks(part_body(blob), 2), "layerPartBlob")
    assert params["layerPartBlob"] == blob


async def test_no_blob_member() -> None:
    body = b'{"repositoryName": "a/b", "note": "layerPartBlob"}'
    assert await jsonbody.parse(chunks(body, 4), "layerPartBlob") == {
        "repositoryName": "a/b", "note": "layerPartBlob"}
    assert await jsonbody.parse(chunks(b"", 4), None) == {}
    assert await jsonbody.parse(chunks(body, 3), None) == json.loads(body)


@pytest.mark.parametrize("body", [
    b'{"layerPartBlob": "QUJD*EFC"}',          # outside the alphabet
    b'{"layerPartBlob": "QUJDR"}',             # not a multiple of 4
    b'{"layerPartBlob": "QQ==QUJD"}',          # padding in the middle
    b'{"layerPartBlob": "QUJD\\u0041QUJD"}',   # an escape other than \\/
    b'{"layerPartBlob": "QUJD',                # never closed
    b'{"layerPartBlob": "QUJD", ',             # broken JSON after the blob
    b'["layerPartBlob"]',
    b"not json at all",
])
async def test_malformed(body: bytes) -> None:
    with pytest.raises(BodyError):
        await jsonbody.parse(chunks(body, 3), "layerPartBlob")


async def test_random_chunkings_agree_with_json() -> None:
    rng = random.Random(7)
    for _ in range(20):
        blob = os.urandom(rng.randrange(0, 5000))
        body = part_body(blob, first=rng.random() < 0.5)
        sizes = [rng.randrange(1, 200) for _ in range(10)]
        params = await jsonbody.parse(chunks(body, sizes), "layerPartBlob")
        expected = json.loads(body)
        expected["layerPartBlob"] = base64.b64decode(expected["layerPartBlob"])
        assert params == expected


class Recorder:
    """A sink that keeps what it is given, and how much of the body had arrived then."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.size = 0  # kept, not summed: asked once per chunk of one byte
        self.drains = 0

    def write(self, piece: bytes) -> None:
        self.pieces.append(piece)
        self.size += len(piece)

    async def drain(self) -> None:
        self.drains += 1

    def __len__(self) -> int:
        return self.size


@pytest.mark.parametrize("sizes", [1, 3, 7, 1000, 65536, [5, 1, 9000, 2]])
async def test_a_sink_gets_the_blob_as_it_arrives(sizes: list[int] | int) -> None:
    blob = os.urandom(200_003)
    heads: list[dict[str, object]] = []
    sink = Recorder()
    arrived: list[int] = []

    async def open_sink(head: dict[str, object]) -> Recorder:
        heads.append(head)
        return sink

    async def counted() -> AsyncIterator[bytes]:
        async for chunk in chunks(part_body(blob), sizes):
            arrived.append(len(sink))
            yield chunk

    params = await jsonbody.parse(counted(), "layerPartBlob", open_sink)
    assert params["layerPartBlob"] is sink
    assert b"".join(sink.pieces) == blob
    assert heads == [{"repositoryName": "a/b", "partFirstByte": 0, "partLastByte": 200_002,
                      "layerPartBlob": ""}]
    assert params["partLastByte"] == 200_002
    assert 0 < arrived[len(arrived) // 2] < len(blob)  # written while the body arrives
    assert sink.drains > 0  # the reading waited for the sink, chunk by chunk
    # Every piece decoded from whole base64 quanta: all but the last are multiples of 3.
    assert all(len(piece) % 3 == 0 for piece in sink.pieces[:-1])


@pytest.mark.parametrize("sizes", [65537, 65538, 65539, [65536, 65537, 99999]])
async def test_chunks_are_decoded_where_they_arrived(sizes: list[int] | int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk that ends inside a base64 quantum carries up to three characters to the next
    one; the carried quantum is completed and decoded on its own, and the rest of the next
    chunk is decoded in place: joining the carry to the chunk copied every chunk of a part
    once more (the usual case, as a body's chunks rarely start on a quantum)."""
    received: list[bytes] = []
    in_place = 0
    decode = jsonbody.b64decode

    def recording(text: bytes | memoryview) -> bytes:
        nonlocal in_place
        if isinstance(text, memoryview) and any(text.obj is chunk for chunk in received):
            in_place += len(text)
        return decode(text)

    monkeypatch.setattr(jsonbody, "b64decode", recording)

    async def kept() -> AsyncIterator[bytes]:
        async for chunk in chunks(part_body(blob), sizes):
            received.append(chunk)
            yield chunk

    blob = os.urandom(1_000_001)
    sink = Recorder()

    async def open_sink(head: dict[str, object]) -> Recorder:
        return sink

    params = await jsonbody.parse(kept(), "layerPartBlob", open_sink)
    assert b"".join(sink.pieces) == blob
    assert params["layerPartBlob"] is sink
    text = len(base64.b64encode(blob))
    # All but the opening and closing chunks' (held apart from the document around the
    # blob) and the carried quanta (four characters each).
    assert in_place >= text - len(received[0]) - len(received[-1]) - 4 * len(received)


class Searched(bytes):
    """A chunk that counts the searches made through it."""

    searches = 0

    def find(self, *args: object) -> int:
        Searched.searches += 1
        return super().find(*args)  # type: ignore[arg-type]

    def __contains__(self, key: object) -> bool:
        Searched.searches += 1
        return super().__contains__(key)  # type: ignore[operator]


@pytest.mark.parametrize("sizes", [65536, 65537, [65536, 65538, 99999]])
async def test_chunks_inside_the_blob_are_not_searched(sizes: list[int] | int) -> None:
    """A chunk wholly inside the blob holds neither the closing quote nor an escape, which
    the strict decode refuses anyway: it is decoded without searching it for them first
    (two passes over every chunk of a part). The chunk holding the quote is searched."""
    blob = os.urandom(1_000_001)
    Searched.searches = 0
    received = 0

    async def searched() -> AsyncIterator[bytes]:
        nonlocal received
        async for chunk in chunks(part_body(blob), sizes):
            received += 1
            yield Searched(chunk)

    sink = Recorder()

    async def open_sink(head: dict[str, object]) -> Recorder:
        return sink

    params = await jsonbody.parse(searched(), "layerPartBlob", open_sink)
    assert b"".join(sink.pieces) == blob
    assert params["partLastByte"] == 1_000_000
    assert received > 10
    assert Searched.searches <= 2  # the last chunk's (the blob's end and its escapes)


async def test_a_blob_before_the_other_members_stays_in_memory() -> None:
    blob = os.urandom(3000)

    async def open_sink(head: dict[str, object]) -> Recorder | None:
        return None if "partFirstByte" not in head else Recorder()

    params = await jsonbody.parse(chunks(part_body(blob, first=True), 100), "layerPartBlob",
                                  open_sink)
    assert params["layerPartBlob"] == blob
