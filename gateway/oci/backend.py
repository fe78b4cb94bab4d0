"""What the OCI handlers need from storage: the ``Registry`` protocol every backend implements.

Every method takes the request's :class:`RequestContext`, whose ``name`` is the repository
name as the client wrote it; mapping it onto a storage location is the backend's business.
Failures are raised as :class:`OciError`. What a backend cannot store (digest algorithms,
blob deletion, manifest sizes) it declares as :class:`Capabilities`, which the handlers
check before any call.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import orjson

from gateway.oci.mediatypes import DEFAULT_MAX_MANIFEST_BYTES, Descriptor, ParsedManifest
from gateway.oci.request import RequestContext


@dataclass(frozen=True)
class Capabilities:
    """What a backend can store; the OCI handlers refuse the rest before calling it."""

    # Digest algorithms content (blobs and manifests) may be addressed by.
    digest_algorithms: frozenset[str] = frozenset({"sha256", "sha512"})
    # Whether ``DELETE /v2/<name>/blobs/<digest>`` can be honoured, and if not, why not (the
    # protocol has no blob deletion yet: every backend declares False, with its reason).
    blob_delete: bool = False
    blob_delete_refusal: str = "the storage does not delete blobs on their own"
    # The largest manifest body the storage takes.
    max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES


@dataclass(frozen=True)
class Referrer:
    """One referrer's descriptor as the index answering it carries it: encoded once, when
    read (its annotations may be MiBs), and shared by every reader of its page."""

    artifact_type: str | None
    encoded: bytes

    @classmethod
    def of(cls, descriptor: Descriptor) -> Referrer:
        return cls(descriptor.artifact_type, orjson.dumps(descriptor.to_json()))


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class ReferrersPage:
    """Some of a subject's referrers, and the opaque cursor of the page after them (None:
    this is the last). ``release``: called once by whoever was handed the page, when it is
    sent (what it holds stops counting against gateway/ecr/referrers_budget.py's bound)."""

    referrers: list[Referrer]
    next: str | None = None
    release: Callable[[], None] = field(default=_nothing, compare=False, repr=False)


@dataclass(frozen=True)
class Manifest:
    body: bytes
    media_type: str
    digest: str


class GrowingBlob(Protocol):
    """A blob whose bytes are still arriving (from another registry, say) and are checked
    against the digest as they do."""

    def open(self) -> AsyncGenerator[bytes, None]:
        """Every byte from the first, as it arrives. Raises :class:`OciError` instead of
        handing on the last bytes when they turn out wrong or stop coming."""

    async def settled(self) -> None:
        """Wait until the blob is stored whole (then :meth:`Registry.locate_blob` finds it
        like any other)."""


@dataclass(frozen=True)
class BlobLocation:
    """Where a blob's bytes can be read: a local file, an upstream URL (time-limited), or
    bytes still arriving (``size`` -1 when not known yet)."""

    size: int
    path: Path | None = None
    url: str | None = None
    # Set when ``url`` is another replica's staged copy: fetched by the gateway itself with
    # this proof (gateway/state/peers.py), never handed to the client.
    peer_proof: str | None = None
    growing: GrowingBlob | None = None


@dataclass(frozen=True)
class UploadStatus:
    upload_id: str
    received: int  # bytes accepted so far; the next chunk starts here


class Registry(Protocol):
    def capabilities(self, ctx: RequestContext) -> Capabilities:
        """What the backend serving ``ctx`` can store (asked before each write or read)."""

    async def stat_blob(self, ctx: RequestContext, digest: str) -> int | None: ...

    def pulls_through(self, ctx: RequestContext, digest: str) -> bool:
        """Whether a miss of this blob is read from an upstream registry (a pull-through
        mirror), which then says whether the repository holds it."""

    async def serves_kept_copy(self, ctx: RequestContext, digest: str) -> bool:
        """Whether a read of the blob may be answered from a copy kept by digest (the
        blob cache, another replica's): only if storage would serve it to the caller now,
        which the repository holding it (:meth:`stat_blob`) does not always mean. A blob
        held but not served is read as :meth:`locate_blob` says."""

    async def locate_blob(self, ctx: RequestContext, digest: str, *,
                          fresh: bool = False) -> BlobLocation: ...

    async def start_upload(self, ctx: RequestContext) -> UploadStatus: ...

    async def mount_blob(self, ctx: RequestContext, digest: str, source: str) -> bool: ...

    async def upload_status(self, ctx: RequestContext, upload_id: str) -> UploadStatus: ...

    async def write_upload(
        self, ctx: RequestContext, upload_id: str, chunks: AsyncIterator[bytes],
        start: int | None, *, length: int | None = None
    ) -> UploadStatus:
        """``length``: the body's, when the request says it before it is read."""

    async def finish_upload(self, ctx: RequestContext, upload_id: str, digest: str) -> None: ...

    async def cancel_upload(self, ctx: RequestContext, upload_id: str) -> None: ...

    async def get_manifest(self, ctx: RequestContext, reference: str,
                           accepted: tuple[str, ...] | None = None) -> Manifest:
        """``accepted``: the manifest types the client accepts (None: any)."""

    async def put_manifest(
        self, ctx: RequestContext, reference: str, body: bytes, parsed: ParsedManifest
    ) -> str: ...

    async def delete_manifest(self, ctx: RequestContext, reference: str) -> None: ...

    async def list_tags(self, ctx: RequestContext) -> list[str]:
        """Lexically sorted, without duplicates; the caller does not change it."""

    async def list_repositories(self, ctx: RequestContext) -> list[str]:
        """Lexically sorted, without duplicates; the caller does not change it."""

    async def referrers(
        self, ctx: RequestContext, digest: str, artifact_type: str | None,
        cursor: str | None = None
    ) -> ReferrersPage:
        """A page of the referrers of ``digest``: the first, or the one ``cursor`` (a
        previous page's ``next``, as the client sent it back) names. The caller calls its
        ``release`` once it is sent."""
