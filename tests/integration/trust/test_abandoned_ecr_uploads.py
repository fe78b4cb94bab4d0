"""A pusher that starts uploads, sends a part's worth of bytes and cancels (or just leaves):
the gateway drops its session and spool at once, but ECR has no call that cancels an upload,
so the part the gateway already sent stays in ECR's upload. Behind the emulator (the
embedded default) that is the gateway machine's own disk, and no limit of the gateway counts
it once the session is gone: repeated, it filled the disk. The emulator ends an upload idle
for ``ECR_EMULATOR_UPLOAD_LIFETIME`` seconds and deletes its file."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient
from tests.support.polling import until

MiB = 1024 * 1024
PART = 5 * MiB  # ECR's part size as the emulator announces it: each PATCH below sends one
EMBEDDED_PART = 10 * MiB  # the emulator's default part size
LIFETIME = 8
CYCLES = 6


def _files(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in folder.iterdir()} \
        if folder.is_dir() else {}


async def test_cancelled_uploads_leave_no_parts_on_the_emulators_disk(tmp_path: Path,
                                                                       repo: str) -> None:
    env = {"ECR_EMULATOR_UPLOAD_LIFETIME": str(LIFETIME), "ECR_EMULATOR_PART_SIZE": str(PART)}
    with EmulatorProcess(tmp_path / "ecr", env=env) as upstream, \
            GatewayProcess(tmp_path / "gateway", upstream_url=upstream.url) as gateway:
        parts = upstream.data_dir / "uploads"
        async with aiohttp.ClientSession() as session:
            client = OciClient(session, gateway.url)
            for _ in range(CYCLES):
                reply = await client.patch(await client.start(repo), os.urandom(PART + 1), 0)
                assert reply.status == 202, reply.body
                async with session.delete(client.url(reply.headers["Location"])) as cancel:
                    assert cancel.status == 204, await cancel.text()
            # The gateway holds nothing of them any more; the emulator a part of each.
            assert _files(gateway.data_dir / "staging" / "spool") == {}
            assert sorted(_files(parts).values()) == [PART] * CYCLES

            assert await until(lambda: not _files(parts), 3 * LIFETIME), \
                "cancelled uploads kept their parts in ECR"

            await _push_still_works(client, repo)


async def test_the_embedded_emulator_keeps_uploads_as_long_as_sessions_live(
        tmp_path: Path, repo: str) -> None:
    """The embedded emulator's upload lifetime is twice the gateway's session idle timeout
    (the time it keeps an idle session's spool), not the emulator's default day."""
    idle = 2
    with GatewayProcess(tmp_path / "gateway",
                        {"uploads": {"idle_timeout_seconds": idle}}) as gateway:
        parts = gateway.data_dir / "emulator" / "uploads"
        async with aiohttp.ClientSession() as session:
            client = OciClient(session, gateway.url)
            reply = await client.patch(await client.start(repo), os.urandom(EMBEDDED_PART), 0)
            assert reply.status == 202, reply.body
            async with session.delete(client.url(reply.headers["Location"])) as cancel:
                assert cancel.status == 204, await cancel.text()
            assert sorted(_files(parts).values()) == [EMBEDDED_PART]

            assert await until(lambda: not _files(parts), 6 * idle), \
                "the embedded emulator kept a cancelled upload's part"
            await _push_still_works(client, repo)


async def _push_still_works(client: OciClient, repo: str) -> None:
    data = os.urandom(PART + 7)
    digest = await client.push_blob(repo, data)
    assert await client.get_blob(repo, digest) == data


async def test_a_client_that_keeps_cancelling_uploads_is_refused_before_ecr_fills(
        tmp_path: Path, repo: str) -> None:
    """Expiry bounds how long a cancelled upload's parts stay in ECR, not how fast one client
    leaves them there: cycling POST, PATCH, DELETE it filled the emulator's disk at line rate
    (about 200 GB in the embedded two hours). Past its bound of bytes sent for uploads that
    ended unfinished (cancelled, or expired) the client gets 429 until they age out of the
    window; completed pushes never count."""
    idle = 4  # the window is twice as long
    bound = 3 * PART
    env = {"ECR_EMULATOR_PART_SIZE": str(PART)}  # the emulator's own lifetime: a day
    config = {"uploads": {"idle_timeout_seconds": idle},
              "limits": {"max_abandoned_upload_bytes_per_client": bound}}
    with EmulatorProcess(tmp_path / "ecr", env=env) as upstream, \
            GatewayProcess(tmp_path / "gateway", config, upstream_url=upstream.url) as gateway:
        parts = upstream.data_dir / "uploads"
        async with aiohttp.ClientSession() as session:
            client = OciClient(session, gateway.url)
            for _ in range(3):  # completed pushes of several parts each: not counted
                await client.push_blob(repo, os.urandom(2 * PART + 1), chunk=PART + 1)
            held_open = await client.start(repo)  # opened while under the bound

            for _ in range(2):  # cancelled, one part each in ECR
                reply = await client.patch(await client.start(repo), os.urandom(PART + 1), 0)
                assert reply.status == 202, reply.body
                async with session.delete(client.url(reply.headers["Location"])) as cancel:
                    assert cancel.status == 204, await cancel.text()
            left = await client.patch(await client.start(repo), os.urandom(PART + 1), 0)
            assert left.status == 202, left.body  # left to expire: counted when it does
            assert await until(lambda: _gone(session, client, left.headers["Location"]),
                               6 * idle), "the idle session did not expire"

            async with session.post(client.url(f"/v2/{repo}/blobs/uploads/")) as refused:
                assert refused.status == 429, await refused.text()
                assert (await refused.json())["errors"][0]["code"] == "TOOMANYREQUESTS"
                retry_after = int(refused.headers["Retry-After"])
                assert 1 <= retry_after <= 2 * idle
            more = await client.patch(held_open, os.urandom(PART + 1), 0)
            assert more.status == 429, more.body
            # ECR holds the three unfinished parts, nothing of the refused requests.
            assert sorted(_files(parts).values()) == [PART] * 3

            # Once they are older than the window, the client pushes again.
            assert await until(lambda: _post_accepted(session, client, repo), 4 * idle)
            await _push_still_works(client, repo)


async def _gone(session: aiohttp.ClientSession, client: OciClient, location: str) -> bool:
    async with session.get(client.url(location)) as reply:
        return reply.status == 404


async def _post_accepted(session: aiohttp.ClientSession, client: OciClient, repo: str) -> bool:
    async with session.post(client.url(f"/v2/{repo}/blobs/uploads/")) as reply:
        return reply.status == 202


# Anonymous pushers told apart by the address a trusted proxy gives, each bound to one part.
ADDRESSED = {"trusted_proxies": ["127.0.0.1/32"],
             "auth": {"allow_anonymous_on_public_address": True},
             "limits": {"max_abandoned_upload_bytes_per_client": PART}}


@contextlib.contextmanager
def _addressed_gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    with EmulatorProcess(tmp_path / "ecr", env={"ECR_EMULATOR_PART_SIZE": str(PART)}) as ecr, \
            GatewayProcess(tmp_path / "gateway", ADDRESSED, upstream_url=ecr.url) as gateway:
        yield gateway


async def _part_sent(session: aiohttp.ClientSession, uploads: str,
                     sender: dict[str, str]) -> str:
    """An upload opened by ``sender`` that sent ECR one part; its URL."""
    async with session.post(uploads, headers=sender) as started:
        assert started.status == 202, await started.text()
        location = uploads.partition("/v2/")[0] + started.headers["Location"]
    async with session.patch(location, data=os.urandom(PART + 1), headers={
            **sender, "Content-Type": "application/octet-stream",
            "Content-Range": f"0-{PART}"}) as sent:
        assert sent.status == 202, await sent.text()
    return location


@pytest.mark.parametrize("ending", ["DELETE", "PUT"])
async def test_ending_another_clients_upload_spends_the_enders_bound(
        tmp_path: Path, repo: str, ending: str) -> None:
    """An anonymous client may cancel an upload whose id it learned (ids show in logs and
    proxies' access lines), or end it with a PUT whose digest does not match. The bytes that
    upload left in ECR count against the client that ended it, not against its owner:
    otherwise anyone could spend a pusher's bound and have its pushes refused with 429 for
    the whole window."""
    victim, attacker = ({"X-Forwarded-For": "203.0.113.7"},
                        {"X-Forwarded-For": "198.51.100.9"})
    with _addressed_gateway(tmp_path) as gateway:
        async with aiohttp.ClientSession() as session:
            uploads = f"{gateway.url}/v2/{repo}/blobs/uploads/"
            location = await _part_sent(session, uploads, victim)
            if ending == "DELETE":
                async with session.delete(location, headers=attacker) as cancelled:
                    assert cancelled.status == 204, await cancelled.text()
            else:
                wrong = "sha256:" + hashlib.sha256(b"not the bytes sent").hexdigest()
                async with session.put(location, params={"digest": wrong},
                                       headers=attacker) as ended:
                    assert ended.status == 400, await ended.text()
                    assert (await ended.json())["errors"][0]["code"] == "DIGEST_INVALID"
                async with session.get(location, headers=victim) as gone:
                    assert gone.status == 404, await gone.text()

            async with session.post(uploads, headers=victim) as again:
                assert again.status == 202, (again.status, await again.text())
            async with session.post(uploads, headers=attacker) as refused:
                assert refused.status == 429, (refused.status, await refused.text())


async def test_a_second_address_cannot_cancel_the_first_ones_uploads_past_its_bound(
        tmp_path: Path, repo: str) -> None:
    """A pusher with two addresses sends from the first and cancels from the second: the
    bytes count against the second, which never needs to POST or PATCH again, so the
    first was never counted and the pair left parts in ECR at line rate. Past its bound the
    second cancels no other client's upload (429); the upload stays, and expires counted
    against the first."""
    sender, canceller = ({"X-Forwarded-For": "198.51.100.9"},
                         {"X-Forwarded-For": "198.51.100.10"})
    with _addressed_gateway(tmp_path) as gateway:
        async with aiohttp.ClientSession() as session:
            uploads = f"{gateway.url}/v2/{repo}/blobs/uploads/"
            statuses = []
            for _ in range(2):
                location = await _part_sent(session, uploads, sender)
                async with session.delete(location, headers=canceller) as cancelled:
                    statuses.append(cancelled.status)
            assert statuses == [204, 429], statuses
            async with session.get(location, headers=sender) as kept:
                assert kept.status == 204, await kept.text()
