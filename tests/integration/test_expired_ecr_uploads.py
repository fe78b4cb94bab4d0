"""A client that trickles an upload: after a part's worth of bytes, a byte at a time, each
PATCH answered 202 with its Range, the gateway's session kept alive by every request. The
bytes under ECR's 5 MiB part minimum stay in the gateway, so ECR receives no part, and ECR
(here the embedded emulator: twice ``uploads.idle_timeout_seconds``) ends the upload. The
closing PUT used to get ``404 BLOB_UPLOAD_UNKNOWN``: every byte the client was told had been
received was lost. The gateway, holding every byte in its staging spool, starts a new ECR
upload, sends them again and goes on; the client never notices."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp

from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, digest_of

MiB = 1024 * 1024
IDLE = 2  # the embedded emulator ends an upload that had no part for twice this
TRICKLE_SECONDS = 1.0  # under IDLE: the gateway's session never idles out
MIN_SENT = 5 * MiB  # a PATCH's end of at least this goes to ECR as a part


def _parts_in_ecr(gateway: GatewayProcess) -> list[int]:
    folder = gateway.data_dir / "emulator" / "uploads"
    return [path.stat().st_size for path in folder.iterdir()] if folder.is_dir() else []


async def _trickle_until_ecr_ends_it(client: OciClient, gateway: GatewayProcess,
                                     location: str, data: bytearray) -> str:
    """Send a byte at a time, each acknowledged, until the emulator ended the upload."""
    deadline = time.monotonic() + 30
    while _parts_in_ecr(gateway):
        assert time.monotonic() < deadline, "the emulator never ended the idle upload"
        byte = os.urandom(1)
        reply = await client.patch(location, byte, len(data))
        assert reply.status == 202, reply.body
        data += byte
        assert reply.headers["Range"] == f"0-{len(data) - 1}"
        location = reply.headers["Location"]
        await asyncio.sleep(TRICKLE_SECONDS)
    return location


async def _trickled(tmp_path: Path, repo: str, more: int) -> None:
    """A part, a trickle past ECR's lifetime of the upload, ``more`` bytes, the PUT."""
    with GatewayProcess(tmp_path / "gateway",
                        {"uploads": {"idle_timeout_seconds": IDLE}}) as gateway:
        async with aiohttp.ClientSession() as session:
            client = OciClient(session, gateway.url)
            data = bytearray(os.urandom(10 * MiB))  # ECR's part size: one part goes
            reply = await client.patch(await client.start(repo), bytes(data), 0)
            assert reply.status == 202, reply.body
            assert _parts_in_ecr(gateway) == [10 * MiB]
            location = await _trickle_until_ecr_ends_it(client, gateway, reply.headers["Location"],
                                                        data)
            if more:
                chunk = os.urandom(more)
                reply = await client.patch(location, chunk, len(data))
                assert reply.status == 202, reply.body
                data += chunk
                location = reply.headers["Location"]
                # Sent to a new ECR upload: the bytes held, then the new part.
                assert sum(_parts_in_ecr(gateway)) >= 2 * 10 * MiB
            digest = digest_of(bytes(data))
            done = await client.put(location, digest)
            assert done.status == 201, done.body
            assert await client.get_blob(repo, digest) == bytes(data)


async def test_a_trickled_upload_ecr_ended_is_completed(tmp_path: Path, repo: str) -> None:
    """Nothing but the closing PUT's last bytes reaches ECR after the upload ended there."""
    await _trickled(tmp_path, repo, 0)


async def test_a_trickled_upload_ecr_ended_takes_more_parts(tmp_path: Path, repo: str) -> None:
    """A PATCH of whole parts after the upload ended in ECR: the parts go to the new one."""
    await _trickled(tmp_path, repo, 12 * MiB)


async def test_an_upload_whose_bytes_the_gateway_does_not_hold_is_unknown(
        tmp_path: Path, repo: str) -> None:
    """Spools bounded below the upload: the gateway holds its tail alone, not its first part,
    so it cannot begin the upload again; the client is told, and starts over."""
    config = {"uploads": {"idle_timeout_seconds": IDLE},
              "blobs": {"staging": {"spools_max_bytes": MiB}}}
    with GatewayProcess(tmp_path / "gateway", config) as gateway:
        async with aiohttp.ClientSession() as session:
            client = OciClient(session, gateway.url)
            data = bytearray(os.urandom(10 * MiB))
            reply = await client.patch(await client.start(repo), bytes(data), 0)
            assert reply.status == 202, reply.body
            location = await _trickle_until_ecr_ends_it(client, gateway, reply.headers["Location"],
                                                        data)
            done = await client.put(location, digest_of(bytes(data)))
            assert done.status == 404, done.body
            assert done.error_code() == "BLOB_UPLOAD_UNKNOWN"
            await client.push_blob(repo, os.urandom(MiB))  # starting over works


async def test_bytes_sent_again_count_against_the_senders_bound(tmp_path: Path,
                                                                repo: str) -> None:
    """What the gateway sends again is the client's, like any part it sends: past its bound
    (another open upload holds the room) the closing PUT gets 429 and the upload stays; once
    the other upload is completed, the same PUT completes it."""
    bound = 16 * MiB
    config = {"uploads": {"idle_timeout_seconds": IDLE},
              "limits": {"max_abandoned_upload_bytes_per_client": bound}}
    with GatewayProcess(tmp_path / "gateway", config) as gateway:
        async with aiohttp.ClientSession() as session:
            client = OciClient(session, gateway.url)
            first = bytearray(os.urandom(10 * MiB))  # a part in ECR
            other = bytearray(os.urandom(6 * MiB))  # a part in ECR: the bound is reached
            uploads = []
            for data in (first, other):
                reply = await client.patch(await client.start(repo), bytes(data), 0)
                assert reply.status == 202, reply.body
                uploads.append(reply.headers["Location"])
            deadline = time.monotonic() + 30
            while _parts_in_ecr(gateway):  # both trickled until ECR ended them
                assert time.monotonic() < deadline, "the emulator never ended the uploads"
                for index, data in enumerate((first, other)):
                    byte = os.urandom(1)
                    reply = await client.patch(uploads[index], byte, len(data))
                    assert reply.status == 202, reply.body
                    data += byte
                await asyncio.sleep(TRICKLE_SECONDS)

            refused = await client.put(uploads[0], digest_of(bytes(first)))
            assert refused.status == 429, refused.body
            assert refused.error_code() == "TOOMANYREQUESTS"
            for location, data in ((uploads[1], other), (uploads[0], first)):
                done = await client.put(location, digest_of(bytes(data)))
                assert done.status == 201, done.body
                assert await client.get_blob(repo, digest_of(bytes(data))) == bytes(data)


async def test_an_upload_is_begun_again_a_bounded_number_of_times(tmp_path: Path,
                                                                  repo: str) -> None:
    """A client that lets ECR end its upload again and again has the gateway send the same
    bytes again each time: after three times the upload ends with ECR's, 404."""
    with GatewayProcess(tmp_path / "gateway",
                        {"uploads": {"idle_timeout_seconds": IDLE}}) as gateway:
        async with aiohttp.ClientSession() as session:
            client = OciClient(session, gateway.url)
            data = bytearray(os.urandom(10 * MiB))
            reply = await client.patch(await client.start(repo), bytes(data), 0)
            assert reply.status == 202, reply.body
            location = reply.headers["Location"]
            for _ in range(3):
                location = await _trickle_until_ecr_ends_it(client, gateway, location, data)
                chunk = os.urandom(MIN_SENT)  # sent to ECR: the upload is begun again
                reply = await client.patch(location, chunk, len(data))
                assert reply.status == 202, reply.body
                data += chunk
                location = reply.headers["Location"]
            location = await _trickle_until_ecr_ends_it(client, gateway, location, data)
            done = await client.put(location, digest_of(bytes(data)))
            assert done.status == 404, done.body
            assert done.error_code() == "BLOB_UPLOAD_UNKNOWN"
            assert sum("begun again as a new ECR upload" in line
                       for line in gateway.log_lines) == 3
