"""Uploads of every shape become ECR's ordered parts, survive drops, and fail cleanly."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, digest_of

MiB = 1024 * 1024


@pytest.fixture
async def client(gateway: GatewayProcess) -> AsyncIterator[OciClient]:
    async with aiohttp.ClientSession() as session:
        yield OciClient(session, gateway.url)


async def upstream_actions(upstream: EmulatorProcess, repository: str) -> list[str]:
    return [e["action"] for e in upstream.requests() if e.get("repository") == repository]


async def test_one_kib_chunks(client: OciClient, repo: str) -> None:
    data = os.urandom(64 * 1024 + 17)
    digest = await client.push_blob(repo, data, chunk=1024)
    assert await client.get_blob(repo, digest) == data


async def test_chunks_across_the_part_minimum(client: OciClient, upstream: EmulatorProcess,
                                              repo: str) -> None:
    """1 MiB chunks: the tail waits until it reaches 5 MiB, then goes up as one part."""
    data = os.urandom(11 * MiB + 3)
    digest = await client.push_blob(repo, data, chunk=MiB)
    actions = await upstream_actions(upstream, repo)
    assert actions.count("UploadLayerPart") == 3  # 5 MiB, 5 MiB, then the final 1 MiB + 3
    assert actions.count("CompleteLayerUpload") == 1
    assert await client.get_blob(repo, digest) == data


async def test_single_long_patch_like_docker(client: OciClient, upstream: EmulatorProcess,
                                             repo: str) -> None:
    """One PATCH without Content-Range (docker's way) is cut on the fly into 10 MiB parts."""
    data = os.urandom(25 * MiB)
    digest = await client.push_blob(repo, data)
    actions = await upstream_actions(upstream, repo)
    assert actions.count("UploadLayerPart") == 3  # 10 + 10 + 5
    assert await client.get_blob(repo, digest) == data


async def test_out_of_order_chunk_gets_416_with_committed_range(client: OciClient,
                                                                repo: str) -> None:
    location = await client.start(repo)
    r = await client.patch(location, b"a" * 100, 0)
    assert r.status == 202 and r.headers["Range"] == "0-99"
    for start in (50, 101, 0):
        r = await client.patch(r.headers["Location"] if r.status == 202 else location,
                               b"b" * 10, start)
        assert r.status == 416
        assert r.headers["Range"] == "0-99"


async def test_dropped_connection_resumes_from_reported_range(gateway: GatewayProcess,
                                                              client: OciClient,
                                                              repo: str) -> None:
    data = os.urandom(8 * MiB)
    location = await client.start(repo)
    path = location if location.startswith("/") else "/" + location.split("/", 3)[3]
    host, port = gateway.host.split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write((f"PATCH {path} HTTP/1.1\r\nHost: {gateway.host}\r\n"
                  f"Content-Type: application/octet-stream\r\n"
                  f"Content-Length: {len(data)}\r\n\r\n").encode())
    sent = 3 * MiB + 12345
    writer.write(data[:sent])
    await writer.drain()
    await asyncio.sleep(0.5)
    writer.transport.abort()  # the connection drops mid-body
    await asyncio.sleep(0.5)

    async with client.session.get(client.url(location)) as status:
        assert status.status == 204
        received = int(status.headers["Range"].split("-")[1]) + 1
        location = status.headers["Location"]
    assert 0 < received <= sent
    r = await client.patch(location, data[received:], received)
    assert r.status == 202 and r.headers["Range"] == f"0-{len(data) - 1}"
    r = await client.put(r.headers["Location"], digest_of(data))
    assert r.status == 201
    assert await client.get_blob(repo, digest_of(data)) == data


async def test_digest_mismatch_leaves_nothing_behind(gateway: GatewayProcess,
                                                     client: OciClient, repo: str) -> None:
    data = os.urandom(6 * MiB)
    wrong = digest_of(b"something else")
    location = await client.start(repo)
    r = await client.patch(location, data)
    r = await client.put(r.headers["Location"], wrong)
    assert r.status == 400
    assert r.error_code() == "DIGEST_INVALID"
    async with client.session.put(client.url(f"{location}?digest={wrong}")) as again:
        assert again.status == 404  # the session is gone
        assert (await again.json())["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    for digest in (wrong, digest_of(data)):
        async with client.session.head(client.url(f"/v2/{repo}/blobs/{digest}")) as head:
            assert head.status == 404
    staging = Path(gateway.data_dir) / "staging"
    session_id = location.rstrip("/").rsplit("/", 1)[1]
    assert not (staging / "spool" / session_id).exists()
    for digest in (wrong, digest_of(data)):
        assert not (staging / "blobs" / "sha256" / digest.split(":")[1]).exists()
    assert not (Path(gateway.data_dir) / "sessions" / f"{session_id}.session").exists()


async def test_monolithic_post_and_put(client: OciClient, repo: str) -> None:
    data = os.urandom(7 * MiB)
    digest = digest_of(data)
    async with client.session.post(client.url(f"/v2/{repo}/blobs/uploads/?digest={digest}"),
                                   data=data) as r:
        assert r.status == 201 and r.headers["Docker-Content-Digest"] == digest
    location = await client.start(repo)
    other = os.urandom(1000)
    r = await client.put(location, digest_of(other), other)
    assert r.status == 201
    assert await client.get_blob(repo, digest) == data
    assert await client.get_blob(repo, digest_of(other)) == other


async def test_cancelled_upload_is_unknown(client: OciClient, repo: str) -> None:
    location = await client.start(repo)
    await client.patch(location, b"x" * 10)
    async with client.session.delete(client.url(location)) as r:
        assert r.status == 204
    async with client.session.get(client.url(location)) as r:
        assert r.status == 404
        assert (await r.json())["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"


async def test_repeated_push_uploads_no_layer(client: OciClient, upstream: EmulatorProcess,
                                              repo: str) -> None:
    layers = [os.urandom(2 * MiB), os.urandom(1000)]
    await client.push_image(repo, "v1", layers)
    before = len(await upstream_actions(upstream, repo))
    # A client checks with HEAD first; everything is there, so nothing is uploaded.
    for layer in layers:
        async with client.session.head(client.url(f"/v2/{repo}/blobs/{digest_of(layer)}")) as r:
            assert r.status == 200 and int(r.headers["Content-Length"]) == len(layer)
    actions = (await upstream_actions(upstream, repo))[before:]
    # At most a layer check each (blobs this gateway just completed need none).
    assert actions.count("BatchCheckLayerAvailability") == len(actions) <= 2


def _upload_files(gateway: GatewayProcess, location: str) -> tuple[Path, Path]:
    """The upload's session record and staging spool."""
    upload_id = location.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return (gateway.data_dir / "sessions" / f"{upload_id}.session",
            gateway.data_dir / "staging" / "spool" / upload_id)


async def test_a_tail_reaches_the_disk_once(gateway: GatewayProcess, client: OciClient,
                                            repo: str) -> None:
    """Bytes under the part minimum wait in the staging spool only: the session record
    (default, process-local store) keeps no second copy of them."""
    data = os.urandom(3 * MiB + 5)
    location = await client.start(repo)
    r = await client.patch(location, data[:2 * MiB], 0)
    assert r.status == 202
    record, spool = _upload_files(gateway, location)
    assert spool.stat().st_size == 2 * MiB
    assert record.stat().st_size < 4096, "the tail's bytes were written to the record too"
    r = await client.patch(r.headers["Location"], data[2 * MiB:], 2 * MiB)
    assert r.status == 202 and r.headers["Range"] == f"0-{len(data) - 1}"
    assert record.stat().st_size < 4096
    r = await client.put(r.headers["Location"], digest_of(data))
    assert r.status == 201
    assert await client.get_blob(repo, digest_of(data)) == data


async def test_a_lost_staged_tail_is_sent_again_from_the_range(gateway: GatewayProcess,
                                                               client: OciClient,
                                                               repo: str) -> None:
    data = os.urandom(2 * MiB)
    location = await client.start(repo)
    r = await client.patch(location, data[:MiB], 0)
    assert r.status == 202
    _, spool = _upload_files(gateway, location)
    spool.unlink()  # as after the machine went down before the page cache was written
    async with client.session.get(client.url(location)) as status:
        assert status.status == 204 and status.headers["Range"] == "0-0"
        location = status.headers["Location"]
    r = await client.patch(location, data[MiB:], MiB)
    assert r.status == 416 and r.headers["Range"] == "0-0"
    r = await client.patch(location, data, 0)
    assert r.status == 202
    r = await client.put(r.headers["Location"], digest_of(data))
    assert r.status == 201
    assert await client.get_blob(repo, digest_of(data)) == data


async def test_a_put_after_the_staged_tail_was_lost_names_the_range(
        gateway: GatewayProcess, client: OciClient, repo: str) -> None:
    data = os.urandom(MiB)
    location = await client.start(repo)
    r = await client.patch(location, data, 0)
    assert r.status == 202
    _upload_files(gateway, location)[1].unlink()
    r = await client.put(r.headers["Location"], digest_of(data))
    assert r.status == 400 and r.error_code() == "BLOB_UPLOAD_INVALID"
    assert r.headers["Range"] == "0-0"
    r = await client.patch(r.headers["Location"], data, 0)
    assert r.status == 202
    assert (await client.put(r.headers["Location"], digest_of(data))).status == 201
