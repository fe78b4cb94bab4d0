"""Request bodies: a JSON object, one member of which may be a large base64 blob.

UploadLayerPart carries up to 20 MiB as base64 inside JSON. Instead of buffering the whole
body, parsing it into a 28 MB string and decoding that, the blob is decoded chunk by chunk as
it arrives (overlapping the decoding with the network transfer) into a single buffer, and only
the small rest of the document goes through orjson. Memory per part is then about the decoded
size, and the base64 text is never held whole.

With an ``open_sink``, the blob is not kept at all: once its opening quote arrives, the
members before it (a client such as botocore sends the blob last) are handed to
``open_sink``, which may return a Sink; every decoded piece then goes to ``Sink.write`` as
it arrives, and the member's value is the sink. Base64 is decoded in runs of whole 4-character
quanta, the remainder waiting for the next chunk; a chunk inside the blob is decoded where it
lies, neither copied nor searched first.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import orjson

try:  # SIMD base64, about 20 times faster than binascii on layer parts
    import pybase64

    def _b64decode(data: bytes | memoryview) -> bytes:
        return pybase64.b64decode(data, validate=True)

except ImportError:  # pragma: no cover - depends on the installation

    def _b64decode(data: bytes | memoryview) -> bytes:
        return binascii.a2b_base64(data, strict_mode=True)

b64decode: Callable[[bytes | memoryview], bytes] = _b64decode

_SEARCH_OVERLAP = 128  # a member name split across two chunks is still found


class BodyError(ValueError):
    """The body is not the JSON object (with valid base64) the action expects."""


@runtime_checkable
class Sink(Protocol):
    """Where a streamed blob's decoded bytes go."""

    def write(self, piece: bytes) -> None: ...

    async def drain(self) -> None: ...  # returns when the sink can take more

    def __len__(self) -> int: ...  # bytes written so far


# Given the members before the blob, a Sink for it, or None to keep it in memory.
SinkOpener = Callable[[dict[str, Any]], Awaitable[Sink | None]]


async def parse(chunks: AsyncIterator[bytes], blob_member: str | None,
                open_sink: SinkOpener | None = None) -> dict[str, Any]:
    """Parse a JSON object from ``chunks``; ``blob_member`` (if given) comes back as bytes,
    or as the sink ``open_sink`` gave for it."""
    if blob_member is None:
        body = bytearray()
        async for chunk in chunks:
            body += chunk
        return _loads(body)
    decoder = _BlobDecoder(blob_member)
    async for chunk in chunks:
        if decoder.feed(chunk):  # the blob begins
            if open_sink is not None:
                head = decoder.head()
                if head is not None:
                    decoder.sink = await open_sink(head)
            decoder.resume()
        if decoder.sink is not None:
            await decoder.sink.drain()  # the reading waits for the sink, not the event loop
    return decoder.finish()


def _loads(body: bytes | bytearray) -> dict[str, Any]:
    try:
        value = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise BodyError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BodyError("the body must be a JSON object")
    return value


class _BlobDecoder:
    """Splits the stream into the document before the blob, the blob, and the document after."""

    def __init__(self, member: str) -> None:
        self._member = member
        self._opening = re.compile(rb'"' + re.escape(member.encode()) + rb'"\s*:\s*"')
        self._before = bytearray()   # the document up to and including the blob's opening quote
        self._after = bytearray()    # from the blob's closing quote on
        self._out: bytearray | None = None  # the blob, when it goes to no sink
        self._out_len = 0
        self._held = b""             # the rest of the chunk in which the blob began
        self.sink: Sink | None = None
        self._pending = b""          # base64 characters not yet a multiple of 4
        self._padded = False         # the last piece ended in "=": nothing may follow
        self._stage = 0              # 0: before the blob, 1: in it, 2: after it

    def feed(self, chunk: bytes) -> bool:
        """Take the next chunk; True when the blob just began (then call ``resume``)."""
        if self._stage == 0:
            start = max(0, len(self._before) - _SEARCH_OVERLAP)
            self._before += chunk
            match = self._opening.search(self._before, start)
            if match is None:
                return False
            self._held = bytes(self._before[match.end():])
            del self._before[match.end():]
            self._stage = 1
            return True
        self._take(chunk)
        return False

    def head(self) -> dict[str, Any] | None:
        """The members before the blob, if they parse as the start of the document."""
        try:
            return _loads(self._before + b'"}')
        except BodyError:
            return None

    def resume(self) -> None:
        held, self._held = self._held, b""
        if self.sink is None:
            # Grown as bytes arrive, not sized from Content-Length: a body is only checked
            # against its signature at its end, and a length announced is not a length sent.
            self._out = bytearray()
        self._take(held)

    def _take(self, chunk: bytes) -> None:
        if self._stage == 1 and self._inside(chunk):
            return
        if self._stage == 1:
            end = chunk.find(b'"')
            if end >= 0:
                self._after += chunk[end:]
                chunk = chunk[:end]
                self._stage = 2
            self._decode(chunk, final=self._stage == 2)
        else:
            self._after += chunk

    def _inside(self, chunk: bytes) -> bool:
        """Decode a chunk that lies wholly inside the blob, without looking for the blob's
        end or an escape first: the strict decode refuses a quote or a backslash, so a chunk
        it takes has neither, and the two searches through every chunk are saved. False,
        with nothing taken, for a chunk the other way must see to."""
        pending = self._pending
        if self._padded or b"\\" in pending:
            return False
        view = memoryview(chunk)
        need = -len(pending) % 4  # the carried quantum's missing characters
        usable = len(view) - (len(view) - need) % 4
        rest = bytes(view[usable:])
        if usable <= need or b'"' in rest or b"\\" in rest:
            return False
        head = pending + bytes(view[:need])
        try:
            first = b64decode(head) if head else b""
            piece = b64decode(view[need:usable])
        except (binascii.Error, ValueError):
            return False
        if head.endswith(b"="):
            return False  # padding before the blob's end: refused the other way
        if first:
            self._emit(first)
        self._emit(piece)
        self._pending = rest
        self._padded = view[usable - 1] == ord("=")
        return True

    def _emit(self, piece: bytes) -> None:
        if self.sink is not None:
            self.sink.write(piece)
        else:
            assert self._out is not None
            self._out += piece
        self._out_len += len(piece)

    def _decode(self, chunk: bytes, *, final: bool) -> None:
        if b"\\" in chunk or b"\\" in self._pending:
            # JSON may escape "/" as "\/"; a lone trailing backslash waits for its partner.
            text = self._pending + chunk
            if text.endswith(b"\\") and not text.endswith(b"\\\\") and not final:
                self._pending = text
                return
            text = text.replace(b"\\/", b"/")
            if b"\\" in text:
                raise BodyError(f"'{self._member}' is not valid base64")
            self._pending = b""
            self._decode_run(text, final=final)
            return
        view = memoryview(chunk)
        if self._pending:
            # The carried characters' quantum is completed from the chunk's head and decoded
            # on its own: joining them to the chunk would copy the whole chunk.
            need = min(len(view), -len(self._pending) % 4)
            head, self._pending = self._pending + bytes(view[:need]), b""
            view = view[need:]
            self._decode_run(head, final=final and not view)
        self._decode_run(view, final=final)

    def _decode_run(self, text: bytes | memoryview, *, final: bool) -> None:
        """Decode ``text`` after the carried characters (none), carrying what is left of
        a quantum unless ``final``."""
        text = self._pending + bytes(text) if self._pending else text
        usable = len(text) if final else len(text) - len(text) % 4
        self._pending = bytes(text[usable:])
        if usable:
            # Each piece is decoded strictly; padding is valid only at the very end.
            if self._padded:
                raise BodyError(f"'{self._member}' is not valid base64")
            try:
                piece = b64decode(memoryview(text)[:usable])
            except (binascii.Error, ValueError):
                raise BodyError(f"'{self._member}' is not valid base64") from None
            self._padded = text[usable - 1] == ord("=")
            self._emit(piece)

    def finish(self) -> dict[str, Any]:
        if self._stage == 0:
            return _loads(self._before)  # no blob member: an ordinary document
        if self._stage == 1:
            raise BodyError(f"'{self._member}' is not terminated")
        params = _loads(self._before + self._after)
        if params.get(self._member) != "":
            raise BodyError(f"'{self._member}' could not be located in the body")
        if self._pending:
            raise BodyError(f"'{self._member}' is not valid base64")
        if self.sink is not None:
            params[self._member] = self.sink
        else:
            assert self._out is not None
            params[self._member] = self._out
        return params

