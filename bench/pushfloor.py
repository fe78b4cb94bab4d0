"""The push's CPU floor: what the protocol requires of the gateway and of the emulator per GiB
of layer, each pass done once in this process and timed on its own (the thread's CPU time,
user + kernel), on the same machine in the same run as the judged CPU rows.

* gateway: receive the layer over a loopback TCP connection, write the staging copy once
  into a new file as the gateway does by default (``O_DIRECT`` where the machine's memory
  balloon reports freed pages to its host, else fresh page-cache pages; see
  ``gateway/disk/direct_io.py``), base64 of the parts (pybase64, as
  ``gateway/ecr/partbody.py``), sha256 of the base64 text (SigV4's payload hash), send the
  base64 over a loopback TCP connection (no sha256 of the layer: ECR hashes the layer as it
  completes it, so the gateway hashes only what ECR does not check, an upload of a digest
  the repository already holds; see ``gateway/ecr/uploads.py``);
* emulator: receive the base64 over loopback, sha256 of it (SigV4 verification), base64
  decode, sha256 of the layer, ``O_DIRECT`` write from a page-aligned buffer and one
  ``fdatasync`` (as ``ecr_emulator/parts.py`` writes in durable mode).

A socket pass is timed in the thread that does it: the receiving thread's CPU is what a
receiving server pays (the sender's kernel runs the loopback's TCP stack), the sending
thread's what a sender pays.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench.images import FreshBytes, MiB
from ecr_emulator.jsonbody import b64decode
from ecr_model.body_reads import READ_SIZE
from gateway.disk.direct_io import balloon_reports_free_pages
from gateway.ecr.partbody import SLICE, b64encode
from gateway.ecr.staging import StagingStore

GiB = 1024 * MiB
_READ = READ_SIZE  # the servers' body reads
_ALIGN = 4096
# Seconds after which a VM's freed pages are back with its host (free page reporting).
_HOST_RECLAIMS_WITHIN = 3.0
T = TypeVar("T")


@dataclass(frozen=True)
class Floor:
    """CPU-s per GiB of layer of each pass, in the order the bytes meet them."""

    passes: dict[str, float]
    direct: bool = True  # the O_DIRECT write was possible (not on tmpfs)

    @property
    def total(self) -> float:
        return sum(self.passes.values())

    def text(self) -> str:
        return (f"{self.total:.2f} CPU-s/GiB: "
                + ", ".join(f"{name} {cost:.2f}" for name, cost in self.passes.items()))


@dataclass(frozen=True)
class PushFloor:
    gateway: Floor
    emulator: Floor


def measure(size: int, fresh: FreshBytes, work: Path) -> PushFloor:
    """Both sides' floors for a layer of ``size`` bytes (at least 1 MiB), made of fresh bytes
    (16 MiB of them, cycled) and written under ``work``."""
    count = max(size // MiB, 1)
    gib = count * MiB / GiB
    layer = list(fresh.chunks(16 * MiB, MiB))
    layer_chunks = [layer[i % len(layer)] for i in range(count)]
    # The base64 text the hashing, sending and decoding passes go over: the pieces of the
    # 16 MiB, cycled to the layer's length (the encoding pass itself covers every byte).
    pieces = list(_encode(layer))
    text_pieces = [pieces[i % len(pieces)] for i in range(count * MiB // SLICE)]

    def per_gib(seconds: float) -> float:
        return seconds / gib

    # The staging copy first, after a pause: the gateway writes it during a push into pages
    # nobody freed a moment before (a VM gets those from its host, page by page), while
    # this process would otherwise reuse pages the push's own staged copy, or the passes
    # below, had just freed (0.23-0.26 CPU-s per GiB against 2.2 measured by perf in the
    # gateway).
    time.sleep(_HOST_RECLAIMS_WITHIN)
    staging = per_gib(_timed(lambda: _write_staging(work / "push-floor-staging",
                                                    layer_chunks))[0])
    received, _ = _loopback(layer_chunks)
    text_received, text_sent = _loopback(text_pieces)
    written, direct = _timed(lambda: _write_direct(work / "push-floor-part", layer_chunks))
    # Both sides hash the base64 text the same way: timed once, counted for both.
    layer_hash = per_gib(_timed(lambda: _sha256(layer_chunks))[0])
    text_hash = per_gib(_timed(lambda: _sha256(text_pieces))[0])
    gateway = Floor({
        "receive": per_gib(received),
        "staging write": staging,
        "base64": per_gib(_timed(lambda: _encode_all(layer_chunks))[0]),
        "SigV4 hash": text_hash,
        "send": per_gib(text_sent),
    })
    emulator = Floor({
        "receive": per_gib(text_received),
        "SigV4 hash": text_hash,
        "base64 decode": per_gib(_timed(lambda: _decode_all(text_pieces))[0]),
        "sha256": layer_hash,
        "O_DIRECT write" if direct else "write": per_gib(written),
    }, direct=direct)
    return PushFloor(gateway, emulator)


def _timed(work: Callable[[], T]) -> tuple[float, T]:
    started = time.thread_time()
    result = work()
    return time.thread_time() - started, result


def _sha256(chunks: Sequence[bytes]) -> str:
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.hexdigest()


def _encode(chunks: Sequence[bytes]) -> Iterator[bytes]:
    """Base64 of each chunk, in slices of SLICE (a chunk's tail of 1-2 bytes is padded: the
    cost is the same, the text's content is not the point)."""
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), SLICE):
            yield b64encode(view[start:start + SLICE])


def _encode_all(chunks: Sequence[bytes]) -> None:
    for _ in _encode(chunks):
        pass


def _decode_all(pieces: Sequence[bytes]) -> None:
    for piece in pieces:
        b64decode(piece)


def _write_staging(root: Path, chunks: Sequence[bytes]) -> None:
    """Spool the chunks once through the gateway's own staging store, as it stages a push by
    default (no sync), in 10 MiB batches as its parts are staged, then drop the spool."""
    staging = StagingStore(root, max_bytes=0, direct=balloon_reports_free_pages())
    session = uuid.uuid4().hex  # spools are named by upload session id
    offset = 0
    try:
        for start in range(0, len(chunks), 10):
            batch = [memoryview(chunk) for chunk in chunks[start:start + 10]]
            staging.append(session, offset, batch)
            offset += sum(len(chunk) for chunk in batch)
    finally:
        staging.discard(session)


def _write_direct(path: Path, chunks: Sequence[bytes]) -> bool:
    """Write the chunks with O_DIRECT from one reused page-aligned buffer, then fdatasync, as
    the emulator's durable parts go to the disk; a plain write where the file system has no
    direct I/O (tmpfs). Whether O_DIRECT was used."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    direct: int | None = None
    buffer = mmap.mmap(-1, MiB)
    try:
        try:
            direct = os.open(path, os.O_WRONLY | getattr(os, "O_DIRECT", 0))
        except OSError:
            direct = None
        offset = 0
        for chunk in chunks:
            if direct is not None and len(chunk) % _ALIGN == 0 and len(chunk) <= MiB:
                buffer[:len(chunk)] = chunk
                _pwrite(direct, memoryview(buffer)[:len(chunk)], offset)
            else:
                _pwrite(fd, memoryview(chunk), offset)
            offset += len(chunk)
        os.fdatasync(fd)
    finally:
        buffer.close()
        for each in (direct, fd):
            if each is not None:
                os.close(each)
        path.unlink()
    return direct is not None and hasattr(os, "O_DIRECT")


def _pwrite(fd: int, view: memoryview, offset: int) -> None:
    written = 0
    while written < len(view):
        written += os.pwrite(fd, view[written:], offset + written)


def _loopback(pieces: Sequence[bytes]) -> tuple[float, float]:
    """Send the pieces over a loopback TCP connection, read them in asyncio's reads on the
    other side: (the receiving thread's CPU-s, the sending thread's)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        sender = socket.create_connection(server.getsockname())
        receiver, _ = server.accept()
    total = sum(len(piece) for piece in pieces)
    received: list[float] = []

    def receive() -> None:
        started = time.thread_time()
        left = total
        while left > 0:
            data = receiver.recv(_READ)
            if not data:
                break
            left -= len(data)
        received.append(time.thread_time() - started)

    reader = threading.Thread(target=receive, name="push-floor-receive")
    with sender, receiver:
        reader.start()
        started = time.thread_time()
        for piece in pieces:
            sender.sendall(piece)
        sent = time.thread_time() - started
        reader.join()
    return received[0], sent
