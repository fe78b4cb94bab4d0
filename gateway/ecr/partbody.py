"""UploadLayerPart's request body, built without botocore's JSON serializer.

UploadLayerPart carries up to 20 MiB as base64 inside a JSON document. botocore would
base64-encode the part with the standard library, decode it to a ``str``, run ``json.dumps``
over the whole document (about 0.27 GB/s for a 20 MiB string: most of a push's CPU), and
SigV4 would then hash the body once more, all on the event loop and on the part's critical
path. Instead:

* :class:`EncodedPart` hashes the body in worker threads ahead of the call (the upload
  manager feeds a :class:`BodyHash` the next part's bytes as they arrive, while the
  previous part is on its way upstream): the body is the small JSON members, then the
  part's base64 text made with SIMD base64 (pybase64, else binascii) from the chunks the
  part arrived in, never joined;
* two event hooks on the client take the part out of botocore's way: at
  ``before-parameter-build`` the part moves into the call's context and botocore serializes
  and validates the document with an empty ``layerPartBlob``; at ``before-call`` the body
  replaces botocore's as a stream with its Content-Length, and its sha256 goes into
  ``X-Amz-Content-SHA256`` so that SigV4 does not hash the body again.

The base64 text is made a second time, slice by slice, while the body is sent: base64 costs
about 0.15 CPU-s per GiB here, far less than holding a third more bytes per part in memory,
and the stream never gives aiohttp one large buffer to copy (a ``bytes`` body is copied
whole: joined with the headers on Python < 3.12.9, then into the transport's buffer).

The bytes on the wire are an ordinary AWS JSON 1.1 document.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import orjson

try:  # SIMD base64: ten times faster than binascii on parts of megabytes
    import pybase64

    def _b64encode(data: bytes | bytearray | memoryview) -> bytes:
        return pybase64.b64encode(data)

except ImportError:  # pragma: no cover - depends on the installation

    def _b64encode(data: bytes | bytearray | memoryview) -> bytes:
        return binascii.b2a_base64(data, newline=False)

b64encode: Callable[[bytes | bytearray | memoryview], bytes] = _b64encode

Buffer = bytes | bytearray | memoryview

OPERATION = "UploadLayerPart"
MEMBER = "layerPartBlob"
_CONTEXT_KEY = "gateway_layer_part"
# Input bytes per base64 piece (a multiple of 3: no padding inside); every piece is a write and
# a send of its own on its way upstream. With the 1 MiB socket reads of a body
# (ecr_model/body_reads.py), 768 KiB pieces (1 MiB of text) cost the gateway and the emulator
# the least CPU per push of the sizes measured (384 KiB, 768 KiB, 1.5 MiB).
SLICE = 768 * 1024
# Below this a part goes through botocore unchanged (nothing to gain).
MIN_BYTES = 64 * 1024


class Base64Stream:
    """Base64 text of bytes fed in any number of calls, in pieces, without joining them: at
    most two bytes are carried from one chunk (or call) to the next."""

    def __init__(self) -> None:
        self._carry = b""

    def pieces(self, chunks: Sequence[Buffer]) -> Iterator[bytes]:
        """The text of ``chunks``, but for the up to two bytes carried to the next call."""
        carry = self._carry
        for chunk in chunks:
            view = memoryview(chunk)
            if carry:
                joined = carry + bytes(view[:3 - len(carry)])
                view = view[3 - len(carry):]
                if len(joined) < 3:
                    carry = joined
                    continue
                yield b64encode(joined)
            usable = len(view) - len(view) % 3
            for start in range(0, usable, SLICE):
                yield b64encode(view[start:min(start + SLICE, usable)])
            carry = bytes(view[usable:])
        self._carry = carry

    def end(self) -> Iterator[bytes]:
        """The carried bytes' text, padded."""
        if self._carry:
            yield b64encode(self._carry)
            self._carry = b""


def _base64_pieces(chunks: Sequence[Buffer]) -> Iterator[bytes]:
    """The base64 text of the chunks' concatenation, in pieces."""
    stream = Base64Stream()
    yield from stream.pieces(chunks)
    yield from stream.end()


class BodyHash:
    """A body's size and sha256, fed the part's bytes as they arrive (blocking: run each
    :meth:`update` in a worker thread, one after the other)."""

    def __init__(self, opening: bytes) -> None:
        self.opening = opening
        self._hasher = hashlib.sha256(opening)
        self._size = len(opening)
        self._text = Base64Stream()

    def update(self, chunks: Sequence[Buffer]) -> None:
        for piece in self._text.pieces(chunks):
            self._hasher.update(piece)
            self._size += len(piece)

    def finish(self, closing: bytes) -> tuple[int, str]:
        """The whole body's size and sha256 hex digest."""
        for piece in self._text.end():
            self._hasher.update(piece)
            self._size += len(piece)
        self._hasher.update(closing)
        return self._size + len(closing), self._hasher.hexdigest()


class Body:
    """A request body: ``opening`` + base64(chunks) + ``closing``, its size and sha256
    (hashed here unless ``hashed`` gives them)."""

    def __init__(self, opening: bytes, chunks: Sequence[Buffer], closing: bytes,
                 hashed: tuple[int, str] | None = None) -> None:
        self.opening = opening
        self.chunks = chunks
        self.closing = closing
        if hashed is None:
            hashing = BodyHash(opening)
            hashing.update(chunks)
            hashed = hashing.finish(closing)
        self.size, self.sha256 = hashed

    def pieces(self) -> Iterator[bytes]:
        yield self.opening
        yield from _base64_pieces(self.chunks)
        yield self.closing

    async def stream(self) -> AsyncIterator[bytes]:
        for piece in self.pieces():
            yield piece


CLOSING = b'"}'


def opening(members: dict[str, Any]) -> bytes:
    """The document's text before the base64: ``members`` and the blob's name (last, as
    botocore sends it: a receiver may stream the blob knowing the other members)."""
    head = orjson.dumps({k: v for k, v in members.items() if k != MEMBER})
    return head[:-1] + (b',"' if len(head) > 2 else b'"') + MEMBER.encode() + b'":"'


def build(members: dict[str, Any], part: Buffer | Sequence[Buffer]) -> Body:
    """The JSON document ``members`` + ``{"layerPartBlob": base64(part)}`` (blocking: the
    hash is a pass over the whole body). ``part`` may be the list of chunks it arrived in."""
    chunks = [part] if isinstance(part, (bytes, bytearray, memoryview)) else part
    return Body(opening(members), chunks, CLOSING)


class EncodedPart:
    """A layer part, as the chunks it arrived in, whose body is hashed ahead of its call.

    ``members`` are the other members the call will send (registryId if any,
    repositoryName, uploadId, partFirstByte, partLastByte); if the call turns out to send
    different ones, the body is simply hashed again at call time.
    """

    def __init__(self, chunks: Buffer | Sequence[Buffer], members: dict[str, Any]) -> None:
        self.chunks: list[Buffer] = (
            [chunks] if isinstance(chunks, (bytes, bytearray, memoryview)) else list(chunks))
        self.size = sum(len(memoryview(chunk)) for chunk in self.chunks)
        self.members = members
        self._built: asyncio.Future[Body] | None = None

    def __len__(self) -> int:
        return self.size

    def data(self) -> bytes:
        return b"".join(self.chunks)

    def hashed_ahead(self, hashing: BodyHash) -> None:
        """The body, hashed as the part's bytes arrived (``hashing`` fed every byte, for
        these members)."""
        built: asyncio.Future[Body] = asyncio.get_running_loop().create_future()
        built.set_result(Body(hashing.opening, self.chunks, CLOSING, hashing.finish(CLOSING)))
        self._built = built

    def prepare(self) -> asyncio.Future[Body]:
        """Start hashing the body in a worker thread (once)."""
        if self._built is None:
            self._built = asyncio.ensure_future(asyncio.to_thread(build, self.members,
                                                                  self.chunks))
        return self._built

    async def body_for(self, members: dict[str, Any]) -> Body:
        if members == self.members:
            return await self.prepare()
        return await asyncio.to_thread(build, members, self.chunks)


def _take_part(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    part = params.get(MEMBER)
    if isinstance(part, EncodedPart) or (
            isinstance(part, (bytes, bytearray, memoryview)) and len(part) >= MIN_BYTES):
        context[_CONTEXT_KEY] = part
        params[MEMBER] = b""


async def _splice_part(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    part = context.pop(_CONTEXT_KEY, None)
    if part is None:
        return
    members = orjson.loads(params["body"])
    members.pop(MEMBER, None)
    if isinstance(part, EncodedPart):
        body = await part.body_for(members)
    else:
        body = await asyncio.to_thread(build, members, part)
    params["body"] = body.stream()
    params["headers"]["Content-Length"] = str(body.size)
    params["headers"]["X-Amz-Content-SHA256"] = body.sha256


def install(client: Any) -> None:
    """Register the hooks on one aiobotocore client (ecr, or any service with the action)."""
    service = client.meta.service_model.service_id.hyphenize()
    events = client.meta.events
    events.register(f"before-parameter-build.{service}.{OPERATION}", _take_part)
    events.register(f"before-call.{service}.{OPERATION}", _splice_part)
