"""Requests an upload refuses as a whole, keeping nothing of them: a chunked body that is not
as long as its Content-Range (416), a closing PUT naming a digest algorithm the storage
cannot hold (400, before its body is read), and a chunk the gateway's full disk cannot take (503
UNAVAILABLE with Retry-After, never a 500; the bytes acknowledged before stay, and the same
chunk is taken once there is space again). The disk is a real small tmpfs."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gzip
import hashlib
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.reliability.helpers import RawReply, http_request, read_response
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, digest_of

MiB = 1024 * 1024


@pytest.fixture
async def client(gateway: GatewayProcess) -> AsyncIterator[OciClient]:
    async with aiohttp.ClientSession() as session:
        yield OciClient(session, gateway.url)


async def _chunked(data: bytes) -> AsyncIterator[bytes]:
    yield data  # an async body: aiohttp sends it chunked, with no Content-Length


async def _patch_chunked(client: OciClient, location: str, content_range: str,
                         data: bytes) -> tuple[int, dict[str, str], bytes]:
    async with client.session.patch(client.url(location), data=_chunked(data), headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": content_range}) as r:
        return r.status, dict(r.headers), await r.read()


async def test_a_chunked_body_must_be_as_long_as_its_content_range(
        client: OciClient, repo: str) -> None:
    data = os.urandom(300)
    location = await client.start(repo)
    first = await client.patch(location, data[:100], 0)
    assert first.status == 202 and first.headers["Range"] == "0-99"
    location = first.headers["Location"]
    for declared, body in (("100-109", data[100:200]), ("100-199", data[100:150])):
        status, headers, _ = await _patch_chunked(client, location, declared, body)
        assert status == 416, (declared, status)
        assert headers["Range"] == "0-99", declared  # nothing of it kept
        async with client.session.get(client.url(location)) as r:
            assert r.status == 204 and r.headers["Range"] == "0-99"
    status, headers, _ = await _patch_chunked(client, location, "100-299", data[100:])
    assert status == 202 and headers["Range"] == "0-299"
    done = await client.put(headers["Location"], digest_of(data))
    assert done.status == 201, done
    assert await client.get_blob(repo, digest_of(data)) == data


@contextlib.contextmanager
def _small_disk(folder: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of ``size`` at ``folder`` (needs root); under CI one that cannot be mounted
    fails the test."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs: {mounted.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> Path:
    """Take every free byte of ``folder``'s file system with a file of its own."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        block = b"\0" * (64 * 1024)
        while True:
            try:
                handle.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        while True:  # the last pages, a byte at a time
            try:
                handle.write(b"\0")
            except OSError:
                break
    return filler


async def _raw(gateway: GatewayProcess, head: bytes, *later: bytes) -> RawReply:
    """Send ``head`` (a request's head and first bytes), then each of ``later`` after a pause
    (so that the handler is reading the body when it breaks), and read the answer."""
    host, port = gateway.host.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head)
        for data in later:
            await writer.drain()
            await asyncio.sleep(0.3)
            writer.write(data)
        await writer.drain()
        reply = await read_response(reader)
    finally:
        writer.close()
    assert reply is not None, "closed without an answer"
    return reply


async def test_a_body_that_breaks_while_read_is_refused_and_kept_nowhere(
        gateway: GatewayProcess, client: OciClient, repo: str) -> None:
    """A body that turns out not to be in its Content-Encoding (at once, or after bytes that
    decoded) is 400 UNSUPPORTED, not a 500: the upload keeps nothing of it."""
    data = os.urandom(300)
    location = await client.start(repo)
    first = await client.patch(location, data[:100], 0)
    assert first.status == 202
    location = first.headers["Location"]
    garbage = await _raw(gateway, http_request(
        "PATCH", location, gateway.host, [("Content-Encoding", "gzip")], b"not gzip at all"))
    packed = gzip.compress(data[100:200])  # its last 8 bytes: the CRC and the length
    broken = packed[:-8] + bytes(8)
    late = await _raw(gateway, http_request(
        "PATCH", location, gateway.host, [("Content-Encoding", "gzip")], broken)[:-8],
        broken[-8:])
    manifest = await _raw(gateway, http_request(
        "PUT", f"/v2/{repo}/manifests/v1", gateway.host,
        [("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
         ("Content-Encoding", "deflate")], b"{not deflate}"))
    for reply in (garbage, late, manifest):
        assert reply.status == 400, (reply.status, reply.body[:300])
        assert reply.error_code() == "UNSUPPORTED"
        async with client.session.get(client.url(location)) as r:
            assert r.status == 204 and r.headers["Range"] == "0-99"
    done = await client.patch(location, data[100:], 100)
    assert done.status == 202 and done.headers["Range"] == "0-299"
    assert (await client.put(location, digest_of(data))).status == 201
    await asyncio.sleep(0.3)  # the log arrives through a pipe
    assert not [line for line in gateway.log_lines if "Traceback" in line]


async def test_a_digest_the_storage_cannot_hold_refuses_the_put_before_its_body(
        client: OciClient, upstream: EmulatorProcess, repo: str) -> None:
    """ECR holds sha256 content only: a closing PUT naming a sha512 digest is refused before
    its body goes anywhere, and the upload stands where it stood for a PUT with its sha256."""
    data = os.urandom(6 * MiB)  # the PUT's body alone fills an ECR part
    location = await client.start(repo)
    first = await client.patch(location, data[:100], 0)
    assert first.status == 202
    location = first.headers["Location"]
    upstream.clear_requests()
    sha512 = "sha512:" + hashlib.sha512(data).hexdigest()
    async with client.session.put(client.url(f"{location}?digest={sha512}"), data=data[100:],
                                  headers={"Content-Type": "application/octet-stream"}) as r:
        assert r.status == 400, await r.text()
        assert json.loads(await r.read())["errors"][0]["code"] == "DIGEST_INVALID"
    assert upstream.requests() == []  # no part of it went upstream
    async with client.session.get(client.url(location)) as r:
        assert r.status == 204 and r.headers["Range"] == "0-99"
    async with client.session.put(client.url(f"{location}?digest={digest_of(data)}"),
                                  data=data[100:]) as r:
        assert r.status == 201, await r.text()
    assert await client.get_blob(repo, digest_of(data)) == data


async def test_a_full_disk_refuses_the_chunk_and_keeps_the_staged_tail(
        upstream: EmulatorProcess, tmp_path: Path, repo: str) -> None:
    data = os.urandom(4 * MiB)
    with _small_disk(tmp_path / "disk") as disk, \
            GatewayProcess(disk / "gateway", upstream_url=upstream.url) as gateway:
        await _full_disk_on_a_staged_tail(gateway, disk, repo, data)


async def _full_disk_on_a_staged_tail(gateway: GatewayProcess, disk: Path, repo: str,
                                      data: bytes) -> None:
    first, second = data[:3 * MiB], data[3 * MiB:]
    async with aiohttp.ClientSession() as session:
        client = OciClient(session, gateway.url)
        location = await client.start(repo)
        upload = location.rstrip("/").rsplit("/", 1)[1]
        reply = await client.patch(location, first, 0)
        assert reply.status == 202 and reply.headers["Range"] == f"0-{3 * MiB - 1}"
        location = reply.headers["Location"]
        spool = disk / "gateway" / "staging" / "spool" / upload
        assert spool.stat().st_size == 3 * MiB  # the tail lives there, under ECR's minimum part

        filler = _fill(disk)
        reply = await client.patch(location, second, 3 * MiB)
        assert reply.status == 503, (reply.status, reply.body)
        error = json.loads(reply.body)["errors"][0]
        assert (error["code"], error["message"]) == ("UNAVAILABLE", "the gateway's disk is full")
        assert int(reply.headers["Retry-After"]) > 0
        assert reply.headers["Range"] == f"0-{3 * MiB - 1}"
        assert spool.stat().st_size == 3 * MiB  # cut back to what was acknowledged, not dropped
        async with session.get(client.url(location)) as r:
            assert r.status == 204 and r.headers["Range"] == f"0-{3 * MiB - 1}"

        filler.unlink()
        reply = await client.patch(location, second, 3 * MiB)  # the same chunk again
        assert reply.status == 202, (reply.status, reply.body)
        assert reply.headers["Range"] == f"0-{4 * MiB - 1}"
        done = await client.put(reply.headers["Location"], digest_of(data))
        assert done.status == 201, done
        assert await client.get_blob(repo, digest_of(data)) == data
        log = "\n".join(gateway.log_lines)
        assert "Traceback" not in log and "internal error" not in log
        assert "lost its staged tail" not in log


async def test_a_full_disk_answers_a_new_upload_with_the_same_clear_error(
        upstream: EmulatorProcess, tmp_path: Path, repo: str) -> None:
    """The session store's own write (a new upload's record) failing for space: 503, one
    warning line, no traceback."""
    with _small_disk(tmp_path / "disk", "4m") as disk, \
            GatewayProcess(disk / "gateway", upstream_url=upstream.url) as gateway:
        await _full_disk_on_a_new_upload(gateway, disk, repo)


async def _full_disk_on_a_new_upload(gateway: GatewayProcess, disk: Path, repo: str) -> None:
    async with aiohttp.ClientSession() as session:
        filler = _fill(disk)
        async with session.post(f"{gateway.url}/v2/{repo}/blobs/uploads/") as r:
            assert r.status == 503, (r.status, await r.text())
            error = (await r.json())["errors"][0]
            assert (error["code"], error["message"]) == ("UNAVAILABLE",
                                                          "the gateway's disk is full")
            assert "Retry-After" in r.headers
        filler.unlink()
        client = OciClient(session, gateway.url)
        data = os.urandom(1000)
        assert await client.push_blob(repo, data, chunk=600) == digest_of(data)
        log = "\n".join(gateway.log_lines)
        assert "Traceback" not in log
        assert sum("disk full" in line for line in gateway.log_lines) == 1
