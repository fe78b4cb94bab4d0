"""Limits against resource exhaustion (the ``limits:`` section), each refused with its OCI
error before anything is read or asked of ECR: manifest size, uploads in progress per client
and in total, open upload sessions, stalled and dragging bodies, slow and oversized headers,
the tags page size."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.integration.reliability.helpers import (
    RawReply,
    http_request,
    image_manifest,
    log_text,
    read_response,
    send_raw,
)
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient

LIMITS = {"max_manifest_bytes": 4096, "max_uploads_per_client": 2, "max_uploads_total": 3,
          "max_open_uploads": 12, "body_idle_timeout_seconds": 1.5,
          "body_timeout_seconds": 4.0, "header_timeout_seconds": 2.0,
          "max_header_bytes": 2048, "max_headers": 40, "max_page_size": 5}


@pytest.fixture(scope="module")
def limitgw(upstream: EmulatorProcess,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("gw"), {"limits": LIMITS},
                        upstream_url=upstream.url) as gateway:
        yield gateway


@pytest.fixture
async def oci(limitgw: GatewayProcess) -> AsyncIterator[OciClient]:
    async with aiohttp.ClientSession() as session:
        yield OciClient(session, limitgw.url)


@contextlib.asynccontextmanager
async def held_patch(gateway: GatewayProcess, location: str, source: str = "127.0.0.1",
                     method: str = "PATCH",
                     length: int = 100_000) -> AsyncIterator[asyncio.StreamReader]:
    """A PATCH (or another ``method``) whose body has begun but not ended (the request stays
    in progress)."""
    host, port = gateway.host.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=(source, 0))
    head = http_request(method, location, gateway.host, content_length=False, close=False)
    writer.write(head[:-2] + f"Content-Length: {length}\r\n\r\n".encode() + b"x" * 100)
    await writer.drain()
    await asyncio.sleep(0.2)
    try:
        yield reader
    finally:
        writer.transport.abort()


async def _request_from(gateway: GatewayProcess, source: str, data: bytes) -> RawReply:
    host, port = gateway.host.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=(source, 0))
    try:
        writer.write(data)
        await writer.drain()
        reply = await asyncio.wait_for(read_response(reader), 10)
        assert reply is not None
        return reply
    finally:
        writer.close()


async def test_manifest_size_limit(oci: OciClient, upstream: EmulatorProcess) -> None:
    name = f"limits/m-{os.urandom(3).hex()}"
    upstream.clear_requests()
    big = image_manifest(b"{}", [os.urandom(10)] * 60)  # about 6 KiB of descriptors
    assert len(big) > LIMITS["max_manifest_bytes"]
    async with oci.session.put(oci.url(f"/v2/{name}/manifests/v1"), data=big, headers={
            "Content-Type": "application/vnd.oci.image.manifest.v1+json"}) as r:
        assert r.status == 413 and (await r.json())["errors"][0]["code"] == "SIZE_INVALID"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for at in range(0, len(big), 1000):
            yield big[at:at + 1000]

    async with oci.session.put(oci.url(f"/v2/{name}/manifests/v1"), data=chunks(), headers={
            "Content-Type": "application/vnd.oci.image.manifest.v1+json"}) as r:
        assert r.status == 413
    assert [e for e in upstream.requests() if e.get("repository") == name] == []


async def test_uploads_in_progress_per_client_and_in_total(limitgw: GatewayProcess,
                                                           oci: OciClient) -> None:
    name = f"limits/u-{os.urandom(3).hex()}"
    locations = [await oci.start(name) for _ in range(4)]
    async with held_patch(limitgw, locations[0]), held_patch(limitgw, locations[1]):
        # A third upload request from the same client: refused at once.
        reply = await send_raw(limitgw.host, http_request(
            "PATCH", locations[2], limitgw.host, [("Content-Range", "0-9")], b"y" * 10))
        assert reply is not None and reply.status == 429 and reply.header("Retry-After")
        assert reply.error_code() == "TOOMANYREQUESTS"
        assert "client" in json.loads(reply.body)["errors"][0]["message"]
        # Another client still gets one (the total allows three) ...
        async with held_patch(limitgw, locations[2], source="127.0.0.2"):
            # ... and a third client none.
            reply = await _request_from(limitgw, "127.0.0.3", http_request(
                "PATCH", locations[3], limitgw.host, [("Content-Range", "0-9")], b"z" * 10))
            assert reply.status == 429 and "registry" in json.loads(reply.body)["errors"][0][
                "message"]
    await asyncio.sleep(0.3)
    r = await oci.patch(locations[3], b"z" * 10, 0)  # slots are free again
    assert r.status == 202
    for location in locations:
        async with oci.session.delete(oci.url(location)):
            pass



async def test_manifest_puts_in_progress_count_as_uploads(limitgw: GatewayProcess) -> None:
    """A manifest PUT's body is held whole while it arrives: stalled ones, from a client
    that may push, must not pile up without bound (each could hold max_manifest_bytes)."""
    path = f"/v2/limits/mp-{os.urandom(3).hex()}/manifests/v1"
    async with held_patch(limitgw, path, method="PUT", length=4000), \
            held_patch(limitgw, path, method="PUT", length=4000):
        reply = await send_raw(limitgw.host, http_request(
            "PUT", path, limitgw.host,
            [("Content-Type", "application/vnd.oci.image.manifest.v1+json")], b"{}"))
        assert reply is not None and reply.status == 429 and reply.header("Retry-After")
        assert reply.error_code() == "TOOMANYREQUESTS"

async def test_open_upload_sessions(oci: OciClient) -> None:
    name = f"limits/o-{os.urandom(3).hex()}"
    opened: list[str] = []
    refused = None
    for _ in range(LIMITS["max_open_uploads"] + 1):
        async with oci.session.post(oci.url(f"/v2/{name}/blobs/uploads/")) as r:
            if r.status == 429:
                refused = await r.json()
                assert r.headers["Retry-After"]
                break
            assert r.status == 202
            opened.append(r.headers["Location"])
    assert refused is not None and refused["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert 1 <= len(opened) <= LIMITS["max_open_uploads"]
    for location in opened:
        async with oci.session.delete(oci.url(location)):
            pass
    async with oci.session.post(oci.url(f"/v2/{name}/blobs/uploads/")) as r:
        assert r.status == 202
        async with oci.session.delete(oci.url(r.headers["Location"])):
            pass


async def test_stalled_and_dragging_bodies_are_cut(limitgw: GatewayProcess,
                                                   oci: OciClient) -> None:
    """A body that stops (idle) or trickles (total) gets 408; the upload keeps what came."""
    name = f"limits/s-{os.urandom(3).hex()}"
    location = await oci.start(name)
    started = time.monotonic()
    async with held_patch(limitgw, location) as reader:
        reply = await asyncio.wait_for(read_response(reader), 10)
    idle_seconds = time.monotonic() - started
    assert reply is not None and reply.status == 408
    assert reply.error_code() == "BLOB_UPLOAD_INVALID"
    assert json.loads(reply.body)["errors"][0]["detail"]["reason"] == "idle"
    async with oci.session.get(oci.url(location)) as status:
        assert status.status == 204 and status.headers["Range"] == "0-99"

    host, port = limitgw.host.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    head = http_request("PATCH", location, limitgw.host, [("Content-Range", "100-10099")],
                        content_length=False, close=False)
    writer.write(head[:-2] + b"Content-Length: 10000\r\n\r\n")
    started = time.monotonic()
    trickle = asyncio.create_task(_trickle(writer))
    reply = await asyncio.wait_for(read_response(reader), 15)
    total_seconds = time.monotonic() - started
    trickle.cancel()
    writer.transport.abort()
    assert reply is not None and reply.status == 408
    assert json.loads(reply.body)["errors"][0]["detail"]["reason"] == "total"
    print(f"\nslow bodies: idle cut after {idle_seconds:.1f}s, trickle cut after "
          f"{total_seconds:.1f}s")
    assert total_seconds < LIMITS["body_timeout_seconds"] + 3
    async with oci.session.delete(oci.url(location)):
        pass


async def test_a_chunked_framing_broken_mid_body_is_refused_at_once(
        limitgw: GatewayProcess, oci: OciClient) -> None:
    """A chunk size that is not hex, arriving after the body began, gets 400 there and then
    (not the idle timeout's 408), one answer, and the upload stands where it stood."""
    name = f"limits/f-{os.urandom(3).hex()}"
    location = await oci.start(name)
    host, port = limitgw.host.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    head = http_request("PATCH", location, limitgw.host,
                        [("Transfer-Encoding", "chunked")], close=False)
    writer.write(head + b"64\r\n" + b"c" * 100 + b"\r\n")
    await writer.drain()
    await asyncio.sleep(0.3)  # the first chunk is read on its own, before the bad framing
    started = time.monotonic()
    writer.write(b"zz\r\nabc\r\n")
    await writer.drain()
    reply = await asyncio.wait_for(read_response(reader), 10)
    waited = time.monotonic() - started
    rest = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert reply is not None and reply.status == 400, reply
    assert reply.error_code() == "UNSUPPORTED"
    assert json.loads(reply.body)["errors"][0]["detail"]["reason"]
    assert waited < LIMITS["body_idle_timeout_seconds"] / 2, waited
    assert rest == b""  # closed after the one answer
    async with oci.session.get(oci.url(location)) as status:
        assert status.status == 204 and status.headers["Range"] == "0-0"
    async with oci.session.patch(oci.url(location), data=b"d" * 100) as patched:
        assert patched.status == 202 and patched.headers["Range"] == "0-99"
    async with oci.session.delete(oci.url(location)):
        pass


async def _trickle(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while True:
            writer.write(b"t")
            await writer.drain()
            await asyncio.sleep(0.5)


async def test_slow_and_oversized_headers(limitgw: GatewayProcess) -> None:
    host, port = limitgw.host.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /v2/ HTTP/1.1\r\nHost: {limitgw.host}\r\n".encode())  # never ends
    started = time.monotonic()
    closed = await asyncio.wait_for(reader.read(), 10)
    waited = time.monotonic() - started
    writer.close()
    assert closed == b""  # closed without an answer
    assert waited < LIMITS["header_timeout_seconds"] + 3

    for headers in ([("X-Padding", "a" * 3000)], [(f"X-H{i}", "v") for i in range(60)]):
        reply = await send_raw(limitgw.host, http_request("GET", "/v2/", limitgw.host, headers))
        assert reply is not None and reply.status in (400, 431), reply
    reply = await send_raw(limitgw.host, http_request("GET", "/v2/" + "a" * 3000,
                                                      limitgw.host))
    assert reply is not None and reply.status in (400, 414, 431)
    print(f"\nslow headers: connection closed after {waited:.1f}s")
    await asyncio.sleep(0.3)
    assert "Traceback" not in "\n".join(limitgw.log_lines)


async def test_tags_page_size(oci: OciClient) -> None:
    name = f"limits/t-{os.urandom(3).hex()}"
    _, manifest = await oci.push_image(name, "v0", [os.urandom(100)])
    for i in range(1, 7):
        async with oci.session.put(oci.url(f"/v2/{name}/manifests/v{i}"), data=manifest,
                                   headers={"Content-Type": "application/vnd.oci.image."
                                                            "manifest.v1+json"}) as r:
            assert r.status == 201
    async with oci.session.get(oci.url(f"/v2/{name}/tags/list?n=100000")) as r:
        assert r.status == 200
        assert (await r.json())["tags"] == ["v0", "v1", "v2", "v3", "v4"]
        assert 'rel="next"' in r.headers["Link"] and "n=5" in r.headers["Link"]


def test_no_traceback_in_the_log(limitgw: GatewayProcess, upstream: EmulatorProcess) -> None:
    assert "Traceback" not in log_text(limitgw, upstream)
