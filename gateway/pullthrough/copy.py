"""One blob from an upstream registry into a backend's repository: streamed, hashed on the
way, never completed when the bytes do not match the digest. Shared by pull-through and
``ecr-gateway sync``. A body that breaks off or falls below the upstream's minimum rate
(pace.py) fails the copy, with its upload never completed."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable

from gateway.oci import errors as oci
from gateway.oci.backend import Registry
from gateway.oci.errors import OciError
from gateway.oci.request import RequestContext
from gateway.pullthrough.upstream import OciUpstream, UpstreamError


async def copy_blob(upstream: OciUpstream, source: str, backend: Registry,
                    ctx: RequestContext,
                    digest: str, progress: Callable[[int], None] | None = None,
                    size: int | None = None,
                    before_write: Callable[[], Awaitable[None]] | None = None) -> bool:
    """Copy ``source@digest`` into ``ctx.name``; False when the backend holds it already (one
    BatchCheckLayerAvailability, usually answered from the gateway's own knowledge). ``size``
    (what the manifest naming the blob says) bounds what is read from the upstream.
    ``before_write`` is awaited once the upstream answered with the blob, before anything is
    written (it creates the repository: not for a blob the upstream does not serve)."""
    with contextlib.suppress(OciError):
        if await backend.stat_blob(ctx, digest) is not None:
            return False
    _size, chunks = await upstream.blob(source, digest, size)
    if before_write is not None:
        await before_write()
    status = await backend.start_upload(ctx)
    try:
        written = await backend.write_upload(ctx, status.upload_id,
                                             verified(chunks, digest, progress), 0)
        if size is not None and written.received != size:
            # A body cut short must fail here, however the upload path took its end: a
            # partial blob is never completed.
            raise UpstreamError(502, f"blob {source}@{digest}: {written.received} bytes "
                                     f"copied where its manifest says {size}")
        await backend.finish_upload(ctx, status.upload_id, digest)
    except BaseException:
        with contextlib.suppress(OciError):
            await backend.cancel_upload(ctx, status.upload_id)
        raise
    return True


async def verified(chunks: AsyncIterator[bytes], digest: str,
                   progress: Callable[[int], None] | None = None) -> AsyncIterator[bytes]:
    """The bytes, hashed as they pass: a mismatch fails before the last byte is handed on,
    so nothing wrong is ever completed."""
    hasher = hashlib.sha256()
    held = b""
    async for chunk in chunks:
        hasher.update(chunk)
        if progress is not None:
            progress(len(chunk))
        if held:
            yield held
        held = chunk
    if f"sha256:{hasher.hexdigest()}" != digest:
        raise OciError(oci.DIGEST_INVALID, {"digest": digest},
                       message="the upstream registry sent bytes that do not match the digest",
                       status=502)
    if held:
        yield held
