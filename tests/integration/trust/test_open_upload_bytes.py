"""A client that never ends its uploads: it opens as many sessions as it may
(``limits.max_open_uploads_per_client``, 100 by default) and streams long PATCHes into each.
The bound of bytes left in ECR counted an upload only once it ended (cancelled, expired), so
none of this counted: ECR (the embedded emulator's disk, the gateway machine's own) held all
of it before the bound refused anything. Bytes sent to ECR for uploads still open now count
against the same per-client bound: a PATCH of known length that would go past it is refused
before any byte is read, a streamed one stops where it would (the bytes ECR holds are kept,
and the upload's Range says so), and a completed upload gives its bytes back."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from tests.integration.reliability.helpers import http_request
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, Reply, digest_of

MiB = 1024 * 1024
PART = 5 * MiB  # the embedded emulator's part size, as set below
BOUND = 4 * PART
SESSIONS = 6
ENV = {"ECR_EMULATOR_PART_SIZE": str(PART)}


def _held_by_ecr(gateway: GatewayProcess) -> int:
    """Bytes of unfinished uploads on the embedded emulator's disk."""
    folder = gateway.data_dir / "emulator" / "uploads"
    return sum(path.stat().st_size for path in folder.iterdir()) if folder.is_dir() else 0


async def _streamed(data: bytes, piece: int = MiB) -> AsyncIterator[bytes]:
    for start in range(0, len(data), piece):
        yield data[start:start + piece]


async def _stream(session: aiohttp.ClientSession, client: OciClient, location: str,
                  data: bytes) -> Reply:
    """A PATCH of unknown length (chunked transfer encoding), as docker sends a layer."""
    async with session.patch(client.url(location), data=_streamed(data),
                             headers={"Content-Type": "application/octet-stream"}) as reply:
        return Reply(reply.status, reply.headers, await reply.read())


def _refused(reply: Reply) -> None:
    assert reply.status == 429, (reply.status, reply.body[:300])
    assert reply.error_code() == "TOOMANYREQUESTS"
    assert int(reply.headers["Retry-After"]) >= 1


async def test_long_patches_into_open_uploads_stop_at_the_clients_bound(
        tmp_path: Path, repo: str, session: aiohttp.ClientSession) -> None:
    config = {"limits": {"max_abandoned_upload_bytes_per_client": BOUND}}
    with GatewayProcess(tmp_path / "gateway", config, env=ENV) as gateway:
        client = OciClient(session, gateway.url)
        locations = [await client.start(repo) for _ in range(SESSIONS)]
        bodies = [os.urandom(2 * PART) for _ in locations]
        # At once, so that no request learns of another's bytes from ECR's answers first.
        replies = await asyncio.gather(*(client.patch(location, body, 0)
                                         for location, body in zip(locations, bodies, strict=True)))
        held = _held_by_ecr(gateway)
        assert held <= BOUND, f"ECR holds {held} bytes of open uploads, the bound is {BOUND}"
        accepted = [i for i, reply in enumerate(replies) if reply.status == 202]
        assert len(accepted) == BOUND // (2 * PART)
        for i, reply in enumerate(replies):
            if i not in accepted:
                _refused(reply)
                # Refused before a byte was read (some before the upload was looked up).
                assert reply.headers.get("Range", "0-0") == "0-0"

        # A streamed body stops where the bound is: ECR holds no more than it.
        first, second = accepted
        done = await client.put(replies[first].headers["Location"], digest_of(bodies[first]))
        assert done.status == 201, done.body  # a completed upload gives its bytes back
        streamed = next(i for i in range(SESSIONS) if i not in accepted)
        data = os.urandom(4 * PART + 7)
        stopped = await _stream(session, client, locations[streamed], data)
        _refused(stopped)
        assert stopped.headers["Range"] == f"0-{2 * PART - 1}", stopped.headers
        held = _held_by_ecr(gateway)
        assert held <= BOUND, f"ECR holds {held} bytes of open uploads, the bound is {BOUND}"

        # Once the other upload is complete, the stopped one goes on from its Range.
        done = await client.put(replies[second].headers["Location"], digest_of(bodies[second]))
        assert done.status == 201, done.body
        rest = await client.patch(stopped.headers["Location"], data[2 * PART:], 2 * PART)
        assert rest.status == 202, rest.body
        done = await client.put(rest.headers["Location"], digest_of(data))
        assert done.status == 201, done.body
        assert await client.get_blob(repo, digest_of(data)) == data


async def test_bytes_sent_into_another_clients_upload_count_against_the_sender(
        tmp_path: Path, repo: str, session: aiohttp.ClientSession) -> None:
    """An anonymous client may write into an upload whose id it learned: what it sends there
    counts against it, not against the upload's owner, whose own pushes go on."""
    victim, attacker = ({"X-Forwarded-For": "203.0.113.7"},
                        {"X-Forwarded-For": "198.51.100.9"})
    config = {"trusted_proxies": ["127.0.0.1/32"],
              "auth": {"allow_anonymous_on_public_address": True},
              "limits": {"max_abandoned_upload_bytes_per_client": 2 * PART}}
    with GatewayProcess(tmp_path / "gateway", config, env=ENV) as gateway:
        uploads = f"{gateway.url}/v2/{repo}/blobs/uploads/"

        async def start(headers: dict[str, str]) -> str:
            async with session.post(uploads, headers=headers) as started:
                assert started.status == 202, await started.text()
                return gateway.url + started.headers["Location"]

        async def patch(location: str, headers: dict[str, str]) -> int:
            async with session.patch(location, data=os.urandom(2 * PART), headers={
                    **headers, "Content-Type": "application/octet-stream",
                    "Content-Range": f"0-{2 * PART - 1}"}) as sent:
                return sent.status

        taken = await start(victim)
        assert await patch(taken, attacker) == 202
        # The attacker is at its bound, the victim is not.
        async with session.post(uploads, headers=attacker) as refused:
            assert refused.status == 429, (refused.status, await refused.text())
        assert await patch(await start(victim), victim) == 202
        assert _held_by_ecr(gateway) <= 2 * 2 * PART


async def test_a_patch_broken_midway_counts_what_ecr_holds_and_no_more(
        tmp_path: Path, repo: str, session: aiohttp.ClientSession) -> None:
    """A PATCH reserves the bytes its Content-Length says it sends; one whose client goes
    away midway counts the parts ECR stored and gives the rest of its room back: the client
    may then send exactly what is left of its bound."""
    config = {"limits": {"max_abandoned_upload_bytes_per_client": BOUND}}
    with GatewayProcess(tmp_path / "gateway", config, env=ENV) as gateway:
        client = OciClient(session, gateway.url)
        broken = await client.start(repo)
        sent = 2 * PART + PART // 2
        _, writer = await asyncio.open_connection(*gateway.host.split(":"))
        writer.write(http_request("PATCH", broken, gateway.host, [
            ("Content-Type", "application/octet-stream"), ("Content-Range", f"0-{BOUND - 1}"),
            ("Content-Length", str(BOUND))], os.urandom(sent)))
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.close()
        # The status waits for the gateway to be done with the broken request.
        async with session.get(client.url(broken)) as status:
            assert status.status == 204, await status.text()
            assert status.headers["Range"] == f"0-{sent - 1}"
        assert _held_by_ecr(gateway) == 2 * PART  # the rest is the upload's tail

        fits = await client.patch(await client.start(repo), os.urandom(2 * PART + 1), 0)
        assert fits.status == 202, fits.body  # two parts go, one byte stays as tail
        assert _held_by_ecr(gateway) == BOUND
        async with session.post(client.url(f"/v2/{repo}/blobs/uploads/")) as full:
            assert full.status == 429, await full.text()  # at its bound now


async def test_a_client_at_its_bound_may_still_send_what_ecr_will_not_hold(
        tmp_path: Path, repo: str, session: aiohttp.ClientSession) -> None:
    """A client whose open uploads hold exactly its bound sends the last, short chunk of one
    of them: those bytes stay the upload's tail until its completion (which is never
    refused), ECR holds nothing more. Refused, the client could finish neither upload (each
    needs its last chunk) and waited for them to expire, then for their bytes to age out."""
    config = {"limits": {"max_abandoned_upload_bytes_per_client": BOUND}}
    with GatewayProcess(tmp_path / "gateway", config, env=ENV) as gateway:
        client = OciClient(session, gateway.url)
        layers = [os.urandom(2 * PART + MiB) for _ in range(BOUND // (2 * PART))]
        locations = []
        for layer in layers:
            sent = await client.patch(await client.start(repo), layer[:2 * PART], 0)
            assert sent.status == 202, sent.body
            locations.append(sent.headers["Location"])
        assert _held_by_ecr(gateway) == BOUND
        for location, layer in zip(locations, layers, strict=True):
            last = await client.patch(location, layer[2 * PART:], 2 * PART)
            assert last.status == 202, (last.status, last.body[:300])
            assert _held_by_ecr(gateway) <= BOUND
            done = await client.put(last.headers["Location"], digest_of(layer))
            assert done.status == 201, done.body
        for layer in layers:
            assert await client.get_blob(repo, digest_of(layer)) == layer
