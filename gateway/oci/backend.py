"""What the OCI handlers need from storage. ``gateway.ecr.registry.EcrRegistry`` implements it.

Every method takes the repository name as the client wrote it; mapping it onto a storage
location is the backend's business. Failures are raised as :class:`OciError`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.oci.mediatypes import Descriptor, ParsedManifest

# The upstream registry a mirror client asked for: containerd adds ``?ns=<host>`` to every
# request it sends to a mirror (None without it). The dispatcher sets it for the duration of
# one request, before access checks and handlers run. It qualifies the whole request rather
# than one operation, and a backend serving a single upstream ignores it, so it travels as a
# context variable instead of a parameter of every method below; a backend that serves
# several upstreams reads it wherever it maps a name onto storage.
upstream_ns: ContextVar[str | None] = ContextVar("upstream_ns", default=None)


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
    async def stat_blob(self, name: str, digest: str) -> int | None: ...

    async def locate_blob(self, name: str, digest: str, *, fresh: bool = False) -> BlobLocation:
        ...

    async def start_upload(self, name: str) -> UploadStatus: ...

    async def mount_blob(self, name: str, digest: str, source: str) -> bool: ...

    async def upload_status(self, name: str, upload_id: str) -> UploadStatus: ...

    async def write_upload(
        self, name: str, upload_id: str, chunks: AsyncIterator[bytes], start: int | None
    ) -> UploadStatus: ...

    async def finish_upload(self, name: str, upload_id: str, digest: str) -> None: ...

    async def cancel_upload(self, name: str, upload_id: str) -> None: ...

    async def get_manifest(self, name: str, reference: str,
                           accepted: tuple[str, ...] | None = None) -> Manifest:
        """``accepted``: the manifest types the client accepts (None: any)."""

    async def put_manifest(
        self, name: str, reference: str, body: bytes, parsed: ParsedManifest
    ) -> str: ...

    async def delete_manifest(self, name: str, reference: str) -> None: ...

    async def list_tags(self, name: str) -> list[str]:
        """Lexically sorted, without duplicates; the caller does not change it."""

    async def list_repositories(self) -> list[str]:
        """Lexically sorted, without duplicates; the caller does not change it."""

    async def referrers(
        self, name: str, digest: str, artifact_type: str | None
    ) -> list[Descriptor]: ...
