"""Bounds against resource exhaustion: concurrent uploads, open sessions, slow bodies.

* Upload requests (POST, PATCH and PUT of ``/v2/<name>/blobs/uploads/``, and manifest PUTs,
  whose bodies are held whole while they arrive) in progress at once, per client (its
  authenticated name, else its address's key: gateway/auth/client_keys.py) and in total;
  beyond either the request gets ``429 TOOMANYREQUESTS`` with Retry-After before anything
  is read or called.
* Upload sessions open at once, per client and in total (a POST beyond either gets 429; the
  per-client count is kept by the session store: gateway/ecr/uploads.py).
* Blob reads streamed from storage at once, per client (proxy mode: each holds one of the
  gateway's HTTP client connections, 100 in all, for as long as its client reads): beyond
  ``max_downloads_per_client`` a read waits up to ``download_wait`` seconds for one of the
  client's own to end (waiting holds no connection), then gets ``429 TOOMANYREQUESTS`` with
  Retry-After, so that one client (anyone, where pulls are anonymous) asking for blobs and
  reading none cannot hold every connection and fail everyone else's reads. Cached copies
  and redirects hold no connection and are not counted; a client at its share claims no
  cache fill (others' reads of the blob would wait for it).
* Request bodies that stall (no byte for ``body_idle_timeout`` seconds) or drag on (longer than
  ``body_timeout`` in all) are cut with ``408``; an upload keeps what it received and the
  client resumes from the reported Range.

Header sizes and slow headers are bounded by the HTTP server itself (``server_options``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ecr_model.body_reads import BodyReads
from gateway.auth.client_keys import client_keys_of
from gateway.auth.forwarded import client_address
from gateway.observability.logs import Sparing, unsaid
from gateway.observability.metrics import DOWNLOAD_REFUSALS
from gateway.oci.errors import TOOMANYREQUESTS, ErrorCode, OciError, malformed_body
from gateway.oci.mediatypes import DEFAULT_MAX_MANIFEST_BYTES

log = logging.getLogger(__name__)

BODY_TIMEOUT = ErrorCode("BLOB_UPLOAD_INVALID", "request body too slow", 408)
MANIFEST_BODY_TIMEOUT = ErrorCode("MANIFEST_INVALID", "request body too slow", 408)


@dataclass(frozen=True)
class Limits:
    max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES
    max_uploads_per_client: int = 32  # 0: unlimited
    max_uploads_total: int = 256  # 0: unlimited
    max_open_uploads: int = 10_000  # 0: unlimited
    body_idle_timeout: float = 60.0  # 0: none
    body_timeout: float = 3600.0  # 0: none
    max_downloads_per_client: int = 50  # 0: unlimited
    download_wait: float = 10.0  # for one of the client's own downloads to end, before a 429


LIMITS = web.AppKey("oci_limits", Limits)
# Where a bound is shared by all clients, one client holds at most a quarter of it.
CLIENT_SHARE = 4


class Holdings:
    """What each client holds of something bounded (requests, bytes), and the total; a
    waiter is woken whenever some is given back."""

    def __init__(self) -> None:
        self._per_client: Counter[str] = Counter()
        self.total = 0
        self._freed = asyncio.Event()  # set (and replaced) whenever some is given back

    def of(self, client: str | None) -> int:
        return self._per_client[client] if client is not None else 0

    def add(self, client: str | None, amount: int) -> None:
        """Count ``amount`` more (fewer, negative) for ``client`` (None: the total only)."""
        self.total += amount
        if client is not None:
            self._per_client[client] += amount
            if self._per_client[client] <= 0:
                del self._per_client[client]
        if amount < 0:
            self._freed.set()
            self._freed = asyncio.Event()

    async def freed(self, within: float) -> bool:
        """Wait up to ``within`` seconds for anyone to give some back: False if none did."""
        freed = self._freed
        try:
            async with asyncio.timeout(max(within, 0.0)):
                await freed.wait()
        except TimeoutError:
            return False
        return True


class UploadSlots:
    """Counts upload requests in progress, per client and in total."""

    def __init__(self, limits: Limits,
                 open_uploads: Callable[[], Awaitable[int]] | None = None) -> None:
        self._limits = limits
        self._open_uploads = open_uploads
        self._held = Holdings()

    @property
    def total(self) -> int:
        return self._held.total

    def in_progress(self, client: str) -> int:
        return self._held.of(client)

    @contextlib.contextmanager
    def _hold(self, client: str) -> Iterator[None]:
        limits = self._limits
        if limits.max_uploads_total and self.total >= limits.max_uploads_total:
            raise _busy("too many uploads in progress on this registry",
                        {"limit": limits.max_uploads_total})
        if limits.max_uploads_per_client and \
                self._held.of(client) >= limits.max_uploads_per_client:
            raise _busy("too many uploads in progress for this client",
                        {"limit": limits.max_uploads_per_client})
        self._held.add(client, 1)
        try:
            yield
        finally:
            self._held.add(client, -1)

    @contextlib.asynccontextmanager
    async def hold(self, request: web.Request) -> AsyncIterator[None]:
        """Hold a slot for the request (429 if none is free); a POST also needs room for one
        more open session."""
        with self._hold(client_of(request)):
            if request.method == "POST" and self._open_uploads is not None and \
                    self._limits.max_open_uploads:
                if await self._open_uploads() >= self._limits.max_open_uploads:
                    raise _busy("too many open upload sessions",
                                {"limit": self._limits.max_open_uploads})
            yield


UPLOAD_SLOTS = web.AppKey("upload_slots", UploadSlots)


class DownloadSlots:
    """Blob reads each client streams from storage at once (proxy mode), each holding a
    connection of the gateway's HTTP client until its answer is sent or cut."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._held = Holdings()

    def in_progress(self, client: str) -> int:
        return self._held.of(client)

    def full(self, client: str) -> bool:
        """Whether a download of ``client`` would wait for one of its own now."""
        share = self._limits.max_downloads_per_client
        return bool(share) and self._held.of(client) >= share

    @contextlib.asynccontextmanager
    async def hold(self, client: str) -> AsyncIterator[None]:
        """A download for ``client``: at once within its share, else once one of its own
        ends, within the wait (429 past it)."""
        share = self._limits.max_downloads_per_client
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._limits.download_wait
        while self.full(client):
            if not await self._held.freed(deadline - loop.time()):
                DOWNLOAD_REFUSALS.inc()
                left_out = _DOWNLOADS_FULL.due("downloads")
                if left_out is not None:
                    log.warning("blob read refused: its client streams %d blobs from storage "
                                "already (limits.max_blob_downloads_per_client)%s", share,
                                unsaid(left_out))
                raise _busy("too many blob downloads in progress for this client",
                            {"limit": share})
        self._held.add(client, 1)
        try:
            yield
        finally:
            self._held.add(client, -1)


DOWNLOAD_SLOTS = web.AppKey("download_slots", DownloadSlots)
_DOWNLOADS_FULL = Sparing()  # a client at its share is said once a minute (the metric counts)


def download_slot(request: web.Request) -> contextlib.AbstractAsyncContextManager[None]:
    """Hold one of the request's client's downloads for as long as the block streams from
    storage (no bound where the application set none)."""
    slots = request.app.get(DOWNLOAD_SLOTS)
    return slots.hold(client_of(request)) if slots is not None else contextlib.nullcontext()


def downloads_full(request: web.Request) -> bool:
    """Whether the request's client streams its share of downloads already."""
    slots = request.app.get(DOWNLOAD_SLOTS)
    return slots is not None and slots.full(client_of(request))


def client_of(request: web.Request) -> str:
    """Who a request counts against: its authenticated subject (``user:`` a user name, or in
    aws mode ``key:`` the access key id: never a secret, but one a client's credentials
    rotate), else its address as the trusted proxies tell it, by its client key
    (``limits.client_key``: an IPv6 one by its /64, a host handed a /64 would otherwise open
    its sessions under 2**64 fresh limits; a translated IPv4 client by its IPv4 address)."""
    principal = request.get("principal")
    subject = getattr(principal, "subject", None)
    if isinstance(subject, str) and subject:
        kind = "key" if getattr(principal, "identity", None) is not None else "user"
        return f"{kind}:{subject}"
    return f"addr:{client_keys_of(request).of(client_address(request)) or '?'}"


def _busy(message: str, detail: dict[str, Any]) -> OciError:
    return OciError(TOOMANYREQUESTS, detail, message=message, headers={"Retry-After": "1"})


def upload_slot(request: web.Request) -> contextlib.AbstractAsyncContextManager[None]:
    slots = request.app.get(UPLOAD_SLOTS)
    return slots.hold(request) if slots is not None else contextlib.nullcontext()


def limits_of(request: web.Request) -> Limits:
    return request.app.get(LIMITS) or Limits()


async def body_chunks(request: web.Request, *,
                      timeout_error: ErrorCode = BODY_TIMEOUT) -> AsyncGenerator[bytes, None]:
    """The request body as it arrives, cut with 408 if it stalls or takes too long; read in
    large socket reads where its length is known (ecr_model/body_reads.py). Consume it
    under ``contextlib.aclosing``: the socket's read mark must be gone as soon as the body is
    no longer read (aiohttp reads what is left of it after the handler, and a mark above
    what is left would hold that read back)."""
    limits = limits_of(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.body_timeout if limits.body_timeout else None
    reads = BodyReads(request.transport, request.content_length)
    try:
        while True:
            wait = limits.body_idle_timeout or None
            if deadline is not None:
                left = deadline - loop.time()
                wait = left if wait is None else min(wait, left)
            reads.before_wait(request.content.total_bytes)
            try:
                async with asyncio.timeout(wait if wait is None else max(wait, 0.0)):
                    chunk = await request.content.readany()
            except TimeoutError:
                idle = deadline is None or loop.time() < deadline
                if idle and not reads.stalled():
                    continue  # bytes came, fewer than the read size: no stall
                raise OciError(timeout_error, {
                    "received": int(getattr(request.content, "total_bytes", 0) or 0),
                    "reason": "idle" if idle else "total"},
                    message=(f"no body data for {limits.body_idle_timeout:g} s" if idle else
                             f"body not received within {limits.body_timeout:g} s"),
                    headers={"Connection": "close"}) from None
            except web.RequestPayloadError as exc:  # an upload keeps nothing of this body
                raise malformed_body(exc) from None
            if not chunk:
                return
            yield chunk
    finally:
        reads.close()


def server_options(*, max_header_bytes: int, max_headers: int,
                   header_timeout: float) -> dict[str, Any]:
    """aiohttp server arguments: header sizes (400 beyond), and how long a connection may
    take to send a request head (aiohttp's keep-alive timer also runs while a head is
    incomplete, so slow-header clients are closed)."""
    options: dict[str, Any] = {}
    if max_header_bytes:
        options.update(max_line_size=max_header_bytes, max_field_size=max_header_bytes)
    if max_headers:
        options["max_headers"] = max_headers
    if header_timeout:
        options["keepalive_timeout"] = header_timeout
    return options
