"""A pusher that starts uploads, sends a part's worth of bytes and cancels (or just leaves):
the gateway drops its session and spool at once, but ECR has no call that cancels an upload,
so the part the gateway already sent stays in ECR's upload. Behind the emulator (the
embedded default) that is the gateway machine's own disk, and no limit of the gateway counts
it once the session is gone: repeated, it filled the disk. The emulator ends an upload idle
for ``ECR_EMULATOR_UPLOAD_LIFETIME`` seconds and deletes its file."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp

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
