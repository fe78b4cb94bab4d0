"""Helpers for the reliability tests: raw HTTP on the wire, the emulator's fault rules, an
OCI client that retries what a registry says is retriable, and state counters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

# Also what the reliability tests import from here.
from tests.support.oci import OCI_CONFIG as OCI_CONFIG
from tests.support.oci import OCI_LAYER as OCI_LAYER
from tests.support.oci import OCI_MANIFEST as OCI_MANIFEST
from tests.support.oci import digest_of as digest_of
from tests.support.oci import image_manifest as image_manifest

MiB = 1024 * 1024
# ECR actions that change the upstream's state.
MUTATING = frozenset({"CreateRepository", "InitiateLayerUpload", "UploadLayerPart",
                      "CompleteLayerUpload", "PutImage", "BatchDeleteImage",
                      "DeleteRepository"})
RETRIABLE = (429, 503)


# -- the emulator's fault rules -------------------------------------------------------------

def faults_admin(emulator: EmulatorProcess, method: str, body: Any = None) -> Any:
    return emulator.control(method, "faults", body)


def set_faults(emulator: EmulatorProcess, rules: list[dict[str, Any]], seed: int) -> None:
    faults_admin(emulator, "DELETE")
    faults_admin(emulator, "POST", {"seed": seed})
    for rule in rules:
        faults_admin(emulator, "POST", rule)


def injected(emulator: EmulatorProcess) -> dict[str, dict[str, int]]:
    stats: dict[str, dict[str, int]] = faults_admin(emulator, "GET")["injected"]
    return stats


def injected_by_kind(stats: dict[str, dict[str, int]]) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for per_action in stats.values():
        kinds.update(per_action)
    return kinds


# -- raw HTTP -------------------------------------------------------------------------------

@dataclass
class RawReply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def error_code(self) -> str | None:
        try:
            return str(json.loads(self.body)["errors"][0]["code"])
        except (ValueError, KeyError, IndexError, TypeError):
            return None


def http_request(method: str, path: str, host: str, headers: list[tuple[str, str]] | None = None,
                 body: bytes = b"", *, content_length: bool = True, close: bool = True) -> bytes:
    """The bytes of one HTTP/1.1 request, exactly as given (nothing is normalised)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    names = {k.lower() for k, _ in headers or []}
    for key, value in headers or []:
        lines.append(f"{key}: {value}")
    if content_length and "content-length" not in names and "transfer-encoding" not in names \
            and (body or method in ("PUT", "POST", "PATCH")):
        lines.append(f"Content-Length: {len(body)}")
    if close and "connection" not in names:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


async def send_raw(host: str, data: bytes, *, head: bool = False,
                   within: float = 20.0) -> RawReply | None:
    """Send ``data`` on a new connection and read one response (None: closed unanswered)."""
    hostname, port = host.rsplit(":", 1)
    async with asyncio.timeout(within):
        reader, writer = await asyncio.open_connection(hostname, int(port))
        try:
            try:
                writer.write(data)
                await writer.drain()
            except ConnectionError:
                pass  # the server may answer and close before reading everything
            return await read_response(reader, head=head)
        finally:
            writer.close()


async def read_response(reader: asyncio.StreamReader, *, head: bool = False) -> RawReply | None:
    """One final response (interim 1xx answers, such as 100 Continue, are skipped)."""
    status = 100
    while 100 <= status < 200:
        try:
            raw_head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
    headers = [(k.strip(), v.strip()) for k, _, v in
               (line.partition(":") for line in lines[1:] if line)]
    reply = RawReply(status, headers, b"")
    if head or status in (204, 304):
        return reply
    length = reply.header("Content-Length")
    try:
        if length is not None:
            reply.body = await reader.readexactly(int(length))
        elif (reply.header("Transfer-Encoding") or "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                body += await reader.readexactly(size + 2)
                del body[-2:]
            reply.body = bytes(body)
        else:
            reply.body = await reader.read()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    return reply


# -- state that must not grow ---------------------------------------------------------------

@dataclass
class LocalState:
    sessions: int
    spools: int
    staged: int
    emulator_uploads: int

    def __str__(self) -> str:
        return (f"sessions={self.sessions} spools={self.spools} staged={self.staged} "
                f"emulator_uploads={self.emulator_uploads}")


def _count(path: Path, pattern: str = "*") -> int:
    return len(list(path.glob(pattern))) if path.exists() else 0


def local_state(gateway: GatewayProcess, emulator: EmulatorProcess) -> LocalState:
    data = Path(gateway.data_dir)
    return LocalState(
        sessions=_count(data / "sessions", "*.session"),
        spools=_count(data / "staging" / "spool"),
        staged=_count(data / "staging" / "blobs" / "sha256"),
        emulator_uploads=_emulator_uploads(Path(emulator.data_dir) / "ecr.sqlite3"))


def _emulator_uploads(database: Path) -> int:
    """Layer uploads the emulator holds open (its database rows, read-only)."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True,
                                            timeout=10)) as db:
        (count,) = db.execute("SELECT count(*) FROM uploads").fetchone()
    return int(count)


def log_text(gateway: GatewayProcess, emulator: EmulatorProcess) -> str:
    return "\n".join(gateway.log_lines) + "\n" + emulator.log_path.read_text(errors="replace")


# -- an OCI client that retries like a real one ---------------------------------------------

@dataclass
class Tally:
    """What the clients saw."""

    retried: Counter[str] = field(default_factory=Counter)  # "429 TOOMANYREQUESTS" ...
    unexpected: list[str] = field(default_factory=list)  # anything not retriable
    client_disconnects: int = 0
    resumed_from: list[int] = field(default_factory=list)
    abandoned_uploads: int = 0


class GiveUp(Exception):
    """A step still failed (retriably) after every attempt."""


class RetryingClient:
    """Every request is retried on 429/503 (after checking the answer is a proper OCI error
    with Retry-After); any other failure is recorded as unexpected."""

    def __init__(self, session: aiohttp.ClientSession, gateway: GatewayProcess, tally: Tally,
                 *, attempts: int = 12, rng: random.Random | None = None) -> None:
        self.session = session
        self.gateway = gateway
        self.base = gateway.url
        self.tally = tally
        self.attempts = attempts
        self.rng = rng or random.Random()

    async def _check_retriable(self, what: str, response: aiohttp.ClientResponse) -> None:
        body = await response.read()
        try:
            code = json.loads(body)["errors"][0]["code"]
        except (ValueError, KeyError, IndexError, TypeError):
            code = None
        if code is None or "Retry-After" not in response.headers:
            self.tally.unexpected.append(f"{what}: {response.status} without OCI body or "
                                         f"Retry-After: {body[:200]!r}")
        self.tally.retried[f"{response.status} {code}"] += 1
        await asyncio.sleep(min(float(response.headers.get("Retry-After", "1")), 1.0) * 0.2)

    async def request(self, method: str, url: str, expect: tuple[int, ...],
                      **kwargs: Any) -> tuple[int, Any, bytes]:
        """(status, headers, body) of the first answer in ``expect``; retries 429/503."""
        for _ in range(self.attempts):
            async with self.session.request(method, self.base + url if url.startswith("/")
                                            else url, **kwargs) as response:
                if response.status in expect:
                    return response.status, response.headers, await response.read()
                if response.status in RETRIABLE:
                    await self._check_retriable(f"{method} {url}", response)
                    continue
                body = await response.read()
                self.tally.unexpected.append(f"{method} {url}: {response.status} {body[:300]!r}")
                raise GiveUp(f"{method} {url}: {response.status}")
        raise GiveUp(f"{method} {url}: still failing")

    async def _status(self, location: str) -> int:
        """The upload's received byte count, from GET …/uploads/<id>."""
        _, headers, _ = await self.request("GET", location, (204,))
        end = int(headers["Range"].split("-")[1])
        return end + 1 if end > 0 else 0

    async def upload(self, name: str, data: bytes, *, chunk: int | None = None,
                     drop_at: float | None = None) -> str:
        """Push a blob: POST, PATCHes (optionally one cut by a dropped connection, then resumed
        from the Range the registry reports), PUT. Returns the digest."""
        digest = digest_of(data)
        _, headers, _ = await self.request("POST", f"/v2/{name}/blobs/uploads/", (202,))
        location = headers["Location"]
        try:
            if drop_at is not None and data:
                await self._dropped_patch(location, data, int(len(data) * drop_at))
            offset = await self._status(location)
            if offset and drop_at is not None:
                self.tally.resumed_from.append(offset)
            step = chunk or max(len(data), 1)
            while offset < len(data):
                piece = data[offset:offset + step]
                status, headers, _ = await self._patch(location, piece, offset)
                if status == 202:
                    location = headers["Location"]
                    offset += len(piece)
                else:  # refused part-way: continue from what the registry says it has
                    offset = await self._status(location)
            await self.request("PUT", f"{location}{'&' if '?' in location else '?'}"
                               f"digest={digest}", (201,))
        except GiveUp:
            self.tally.abandoned_uploads += 1
            async with self.session.delete(self.base + location):
                pass
            raise
        return digest

    async def _patch(self, location: str, piece: bytes, offset: int) -> tuple[int, Any, bytes]:
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Range": f"{offset}-{offset + len(piece) - 1}"}
        for _ in range(self.attempts):
            async with self.session.patch(self.base + location, data=piece,
                                          headers=headers) as response:
                if response.status == 202:
                    return 202, response.headers, await response.read()
                if response.status in RETRIABLE:
                    await self._check_retriable(f"PATCH {location}", response)
                    return response.status, response.headers, b""
                body = await response.read()
                self.tally.unexpected.append(f"PATCH {location}: {response.status} "
                                             f"{body[:300]!r}")
                raise GiveUp(f"PATCH: {response.status}")
        raise GiveUp("PATCH: still failing")

    async def _dropped_patch(self, location: str, data: bytes, cut: int) -> None:
        """Start a PATCH of all of ``data`` and drop the connection after ``cut`` bytes."""
        hostname, port = self.gateway.host.rsplit(":", 1)
        _, writer = await asyncio.open_connection(hostname, int(port))
        writer.write(http_request("PATCH", location, self.gateway.host,
                                  [("Content-Type", "application/octet-stream")], b"",
                                  content_length=False, close=False)[:-2]
                     + f"Content-Length: {len(data)}\r\n\r\n".encode())
        writer.write(data[:cut])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()
        self.tally.client_disconnects += 1
        await asyncio.sleep(0.05)

    async def put_manifest(self, name: str, tag: str, manifest: bytes) -> str:
        _, headers, _ = await self.request("PUT", f"/v2/{name}/manifests/{tag}", (201,),
                                           data=manifest,
                                           headers={"Content-Type": OCI_MANIFEST})
        return str(headers["Docker-Content-Digest"])

    async def pull(self, name: str, tag: str) -> tuple[bytes, list[bytes]]:
        """The manifest, then every blob it names, each checked against its digest."""
        _, headers, manifest = await self.request(
            "GET", f"/v2/{name}/manifests/{tag}", (200,), headers={"Accept": OCI_MANIFEST})
        assert headers["Docker-Content-Digest"] == digest_of(manifest)
        doc = json.loads(manifest)
        blobs = []
        for descriptor in [doc["config"], *doc["layers"]]:
            _, _, blob = await self.request("GET", f"/v2/{name}/blobs/{descriptor['digest']}",
                                            (200,))
            assert digest_of(blob) == descriptor["digest"], f"{name}: wrong bytes"
            assert len(blob) == descriptor["size"]
            blobs.append(blob)
        return manifest, blobs


def random_bytes(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size) if size < 4096 else os.urandom(size)
