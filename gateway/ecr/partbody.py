"""UploadLayerPart's request body, built without botocore's JSON serializer.

UploadLayerPart carries up to 20 MiB as base64 inside a JSON document. botocore would
base64-encode the part with the standard library, decode it to a ``str``, run ``json.dumps``
over the whole document (about 0.27 GB/s for a 20 MiB string: most of a push's CPU), and
SigV4 would then hash the body once more, all on the event loop and on the part's critical
path. Instead:

* :class:`EncodedPart` builds the body (SIMD base64, in slices that are never joined) and
  its sha256 in a worker thread, ahead of the call: the upload manager prepares the next
  part while the previous one is still on its way upstream;
* two event hooks on the client take the part out of botocore's way: at
  ``before-parameter-build`` the part moves into the call's context and botocore serializes
  and validates the document with an empty ``layerPartBlob``; at ``before-call`` the
  prepared body replaces botocore's (or, for plain bytes or a document that differs from the
  one prepared, one is built now in a worker thread) as a stream of slices with its
  Content-Length, and the body's sha256 goes into ``X-Amz-Content-SHA256`` so that SigV4
  does not hash the body again.

The bytes on the wire are an ordinary AWS JSON 1.1 document.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

try:  # SIMD base64: several times faster than binascii on parts of megabytes
    import pybase64

    def _b64encode(data: bytes | bytearray | memoryview) -> bytes:
        return pybase64.b64encode(data)

    def _b64decode(data: bytes) -> bytes:
        return pybase64.b64decode(data, validate=True)

except ImportError:  # pragma: no cover - depends on the installation

    def _b64encode(data: bytes | bytearray | memoryview) -> bytes:
        return binascii.b2a_base64(data, newline=False)

    def _b64decode(data: bytes) -> bytes:
        return binascii.a2b_base64(data, strict_mode=True)

b64encode: Callable[[bytes | bytearray | memoryview], bytes] = _b64encode
b64decode: Callable[[bytes], bytes] = _b64decode

OPERATION = "UploadLayerPart"
MEMBER = "layerPartBlob"
_CONTEXT_KEY = "gateway_layer_part"
_SLICE = 3 * 1024 * 1024  # a multiple of 3: slices encode without padding
_SEND_CHUNK = 256 * 1024  # about what a loopback socket takes per send
# Below this a part goes through botocore unchanged (nothing to gain).
MIN_BYTES = 64 * 1024


class Body:
    """A request body as the pieces it was built from (never joined), with its sha256.

    It is sent as a stream of slices of those pieces with an explicit Content-Length: one
    large ``bytes`` body would be copied whole by aiohttp (joined with the headers on
    Python < 3.12.9) and again into the socket transport's buffer.
    """

    def __init__(self, pieces: list[bytes], digest: str) -> None:
        self.pieces = pieces
        self.size = sum(len(piece) for piece in pieces)
        self.sha256 = digest

    async def stream(self) -> AsyncIterator[memoryview]:
        for piece in self.pieces:
            view = memoryview(piece)
            for at in range(0, len(view), _SEND_CHUNK):
                yield view[at:at + _SEND_CHUNK]


def build(members: dict[str, Any], part: bytes | bytearray | memoryview) -> Body:
    """The JSON document ``members`` + ``{"layerPartBlob": base64(part)}``.

    The base64 text is made in slices and hashed as it is made; the only large allocations
    are the slices themselves, which are the body.
    """
    head = orjson.dumps({k: v for k, v in members.items() if k != MEMBER})
    pieces = [head[:-1] + (b',"' if len(head) > 2 else b'"') + MEMBER.encode() + b'":"']
    view = memoryview(part)
    for start in range(0, len(view), _SLICE):
        pieces.append(b64encode(view[start:start + _SLICE]))
    pieces.append(b'"}')
    hasher = hashlib.sha256()
    for piece in pieces:
        hasher.update(piece)
    return Body(pieces, hasher.hexdigest())


class EncodedPart:
    """A layer part whose request body is built ahead of its call.

    ``members`` are the other members the call will send (registryId if any,
    repositoryName, uploadId, partFirstByte, partLastByte); if the call turns out to send
    different ones, its body is simply built again at call time. Once the body is built the
    raw bytes can be let go (:meth:`release`): :meth:`data` then decodes them from the body,
    which only a failed call needs (the bytes become an upload's tail again).
    """

    def __init__(self, data: bytes, members: dict[str, Any]) -> None:
        self._data: bytes | None = data
        self.size = len(data)
        self.members = members
        self._built: asyncio.Future[Body] | None = None

    def __len__(self) -> int:
        return self.size

    def prepare(self) -> asyncio.Future[Body]:
        """Start building the body in a worker thread (once)."""
        if self._built is None:
            self._built = asyncio.ensure_future(asyncio.to_thread(build, self.members,
                                                                  self.data()))
        return self._built

    def release(self) -> None:
        """Drop the raw bytes if the body holds them."""
        if self._built is not None and self._built.done() and not self._built.exception():
            self._data = None

    def data(self) -> bytes:
        if self._data is not None:
            return self._data
        assert self._built is not None
        pieces = self._built.result().pieces[1:-1]
        return b"".join(b64decode(piece) for piece in pieces)

    async def body_for(self, members: dict[str, Any]) -> Body:
        if members == self.members:
            return await self.prepare()
        return await asyncio.to_thread(build, members, self.data())


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
