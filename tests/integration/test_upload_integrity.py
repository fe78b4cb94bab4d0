"""Every upload's bytes are checked against the claimed digest, by ECR or by the gateway.

ECR hashes a new layer at CompleteLayerUpload, but answers LayerAlreadyExistsException before
hashing anything when the repository already holds the digest, so an upload of other bytes
under such a digest would be accepted if the gateway did not then hash its staged copy.
Every upload shape is tried against a digest that is already stored.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, Reply, digest_of

MiB = 1024 * 1024


@pytest.fixture
async def client(gateway: GatewayProcess) -> AsyncIterator[OciClient]:
    async with aiohttp.ClientSession() as session:
        yield OciClient(session, gateway.url)


def _session_id(location: str) -> str:
    return location.split("?", 1)[0].rstrip("/").rsplit("/", 1)[1]


def _assert_nothing_left(gateway: GatewayProcess, location: str, digest: str,
                         good: bytes) -> None:
    data = Path(gateway.data_dir)
    session_id = _session_id(location)
    assert not (data / "staging" / "spool" / session_id).exists()
    assert not (data / "sessions" / f"{session_id}.session").exists()
    staged = data / "staging" / "blobs" / "sha256" / digest.split(":")[1]
    assert not staged.exists() or staged.read_bytes() == good


def _spool_heads(gateway: GatewayProcess) -> list[bytes]:
    """The first bytes of every spool the gateway holds."""
    return [path.read_bytes()[:64] for path in Path(gateway.data_dir, "staging", "spool")
            .iterdir()]


def _staged(gateway: GatewayProcess, digest: str) -> bytes | None:
    path = Path(gateway.data_dir, "staging", "blobs", "sha256", digest.split(":")[1])
    return path.read_bytes() if path.exists() else None


def _immutable(gateway: GatewayProcess, location: str, on: bool) -> None:
    """Make the upload's session record immutable (``chattr +i``), or mutable again."""
    record = Path(gateway.data_dir, "sessions", f"{_session_id(location)}.session")
    assert record.is_file()
    subprocess.run(["chattr", "+i" if on else "-i", str(record)], check=True)


def _drop_spool(gateway: GatewayProcess, location: str) -> None:
    Path(gateway.data_dir, "staging", "spool", _session_id(location)).unlink()


async def _monolithic(client: OciClient, repo: str, digest: str, data: bytes) -> Reply:
    async with client.session.post(client.url(f"/v2/{repo}/blobs/uploads/?digest={digest}"),
                                   data=data) as r:
        return Reply(r.status, r.headers, await r.read())


async def _post_put(client: OciClient, repo: str, digest: str, data: bytes) -> Reply:
    return await client.put(await client.start(repo), digest, data)


async def _chunked(client: OciClient, repo: str, digest: str, data: bytes) -> Reply:
    location = await client.start(repo)
    step = 3 * MiB
    for offset in range(0, len(data), step):
        r = await client.patch(location, data[offset:offset + step], offset)
        assert r.status == 202, r.body
        location = r.headers["Location"]
    return await client.put(location, digest)


async def _docker_like(client: OciClient, repo: str, digest: str, data: bytes) -> Reply:
    location = await client.start(repo)
    r = await client.patch(location, data)
    assert r.status == 202, r.body
    return await client.put(r.headers["Location"], digest)


SHAPES = {"monolithic": _monolithic, "post_put": _post_put, "chunked": _chunked,
          "single_patch": _docker_like}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("size", [1000, 13 * MiB])
async def test_wrong_bytes_under_a_stored_digest_are_refused(
        client: OciClient, gateway: GatewayProcess, upstream: EmulatorProcess, repo: str,
        shape: str, size: int) -> None:
    good = os.urandom(size)
    digest = await client.push_blob(repo, good)
    bad = os.urandom(size)
    reply = await SHAPES[shape](client, repo, digest, bad)
    assert reply.status == 400, reply.body
    assert reply.error_code() == "DIGEST_INVALID"
    assert "Retry-After" not in reply.headers
    assert await client.get_blob(repo, digest) == good
    assert bad[:64] not in _spool_heads(gateway), "a spool of the refused upload is left"
    assert _staged(gateway, digest) in (None, good)


async def test_refused_upload_closes_its_session(client: OciClient, gateway: GatewayProcess,
                                                 upstream: EmulatorProcess, repo: str) -> None:
    good = os.urandom(6 * MiB)
    digest = await client.push_blob(repo, good)
    upstream.clear_requests()
    location = await client.start(repo)
    r = await client.patch(location, os.urandom(6 * MiB))
    location = r.headers["Location"]
    r = await client.put(location, digest)
    assert r.status == 400 and r.error_code() == "DIGEST_INVALID"
    assert "computed" in r.body.decode()
    async with client.session.get(client.url(location)) as status:
        assert status.status == 404  # the session is closed
    _assert_nothing_left(gateway, location, digest, good)
    # ECR vouched for nothing (it holds the digest): that answer is what made the gateway
    # hash the bytes itself.
    assert [e["outcome"] for e in upstream.requests("CompleteLayerUpload")
            if e.get("repository") == repo] == ["LayerAlreadyExistsException"]


@pytest.mark.parametrize("size", [1000, 13 * MiB])
async def test_wrong_bytes_under_a_new_digest_are_refused_by_ecrs_own_check(
        client: OciClient, gateway: GatewayProcess, upstream: EmulatorProcess, repo: str,
        size: int) -> None:
    """A digest the repository does not hold: ECR hashes the layer as it completes it, and
    that check is the only one (the gateway does not hash the same bytes again)."""
    await client.push_blob(repo, b"the repository exists")
    good, bad = os.urandom(size), os.urandom(size)
    digest = digest_of(good)
    upstream.clear_requests()
    logged = len(gateway.log_lines)
    location = await client.start(repo)
    r = await client.patch(location, bad)
    assert r.status == 202, r.body
    location = r.headers["Location"]
    r = await client.put(location, digest)
    assert r.status == 400 and r.error_code() == "DIGEST_INVALID", r.body
    assert "Retry-After" not in r.headers
    assert [e["outcome"] for e in upstream.requests("CompleteLayerUpload")
            if e.get("repository") == repo] == ["InvalidLayerException"]
    async with client.session.get(client.url(location)) as status:
        assert status.status == 404  # the session is closed
    _assert_nothing_left(gateway, location, digest, good)
    async with client.session.head(client.url(f"/v2/{repo}/blobs/{digest}")) as head:
        assert head.status == 404
    assert not any("hashing its staged copy" in line for line in gateway.log_lines[logged:])
    # The right bytes then go in as any new blob.
    assert await client.push_blob(repo, good) == digest


@pytest.mark.parametrize("shape", ["chunked", "single_patch"])
async def test_correct_bytes_of_a_stored_digest_are_accepted(
        client: OciClient, upstream: EmulatorProcess, repo: str, shape: str) -> None:
    data = os.urandom(25 * MiB)  # several parts in one request
    digest = await client.push_blob(repo, data)
    again = await SHAPES[shape](client, repo, digest, data)
    assert again.status == 201, again.body
    completions = [e["outcome"] for e in upstream.requests("CompleteLayerUpload")
                   if e.get("repository") == repo]
    assert completions == ["ok", "LayerAlreadyExistsException"]
    assert await client.get_blob(repo, digest) == data


async def test_an_upload_resumed_by_another_process_is_checked_from_its_staged_copy(
        upstream: EmulatorProcess, tmp_path: Path, repo: str) -> None:
    """The process that finishes the upload never saw its first part (it restarted after
    that part went to ECR): it has no running hash, hashes the staged copy and still refuses
    wrong bytes."""
    half = 6 * MiB  # over ECR's part minimum: the first PATCH leaves as a part
    good = os.urandom(2 * half)
    with GatewayProcess(tmp_path / "gw", upstream_url=upstream.url) as gateway:
        # No kept-alive connections: the gateway restarts between requests.
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)) as session:
            client = OciClient(session, gateway.url)

            async def resumed(data: bytes, digest: str, *, keep_spool: bool) -> Reply:
                location = await client.start(repo)
                r = await client.patch(location, data[:half], 0)
                assert r.status == 202, r.body
                gateway.restart()
                if not keep_spool:
                    _drop_spool(gateway, location)
                r = await client.patch(location, data[half:], half)
                assert r.status == 202, r.body
                return await client.put(location, digest)

            digest = await client.push_blob(repo, good)
            r = await resumed(os.urandom(2 * half), digest, keep_spool=True)
            assert r.status == 400 and r.error_code() == "DIGEST_INVALID", r.body
            assert _spool_heads(gateway) == []
            assert await client.get_blob(repo, digest) == good

            # Without a staged copy either, only ECR can check; it does not when it already
            # holds the digest, so the gateway refuses rather than vouch for unread bytes.
            r = await resumed(good, digest, keep_spool=False)
            assert r.status == 400 and r.error_code() == "BLOB_UPLOAD_INVALID", r.body
            async with session.head(client.url(f"/v2/{repo}/blobs/{digest}")) as head:
                assert head.status == 200  # what a client checks before pushing again

            # A digest ECR does not hold yet is checked by ECR itself: accepted.
            fresh = os.urandom(2 * half)
            r = await resumed(fresh, digest_of(fresh), keep_spool=False)
            assert r.status == 201, r.body
            async with session.head(client.url(f"/v2/{repo}/blobs/{digest_of(fresh)}")) as head:
                assert head.status == 200 and head.headers["Content-Length"] == str(len(fresh))
            # A staged copy that holds every byte is hashed and then served.
            other = os.urandom(2 * half)
            r = await resumed(other, digest_of(other), keep_spool=True)
            assert r.status == 201, r.body
            assert _staged(gateway, digest_of(other)) == other


async def test_an_upload_finished_by_a_process_that_died_before_answering_is_accepted_again(
        upstream: EmulatorProcess, tmp_path: Path, repo: str) -> None:
    """The process completed the layer in ECR and kept the staged copy, then died before
    its session record was gone (here: the record cannot be deleted). The client sends its
    PUT again to the restarted gateway, which has no running hash: the upload's spool is
    still there to be hashed, so the upload is accepted, not refused as unverifiable."""
    data = os.urandom(6 * MiB + 12345)
    digest = digest_of(data)
    with GatewayProcess(tmp_path / "gw", upstream_url=upstream.url) as gateway:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)) as session:
            client = OciClient(session, gateway.url)
            location = await client.start(repo)
            r = await client.patch(location, data, 0)
            assert r.status == 202, r.body
            # An immutable file cannot be unlinked, even by root: the session's deletion
            # fails right after the layer was completed and staged, as a crash there would.
            _immutable(gateway, location, True)
            try:
                r = await client.put(location, digest)
                assert r.status >= 500, r.body
            finally:
                _immutable(gateway, location, False)
            gateway.restart()
            r = await client.put(location, digest)
            assert r.status == 201, r.body
            assert await client.get_blob(repo, digest) == data
            _assert_nothing_left(gateway, location, digest, data)



def _leave_orphans(gateway: GatewayProcess, orphan: str, live: str) -> list[Path]:
    """With the gateway stopped: the files a crash between two steps leaves behind, an
    upload's spool without its session and a half-made ``.kept`` link."""
    spools = Path(gateway.data_dir, "staging", "spool")
    Path(gateway.data_dir, "sessions", f"{_session_id(orphan)}.session").unlink()
    half_kept = spools / f"{_session_id(live)}.kept"
    half_kept.write_bytes(b"a link promote made before the process died")
    return [spools / _session_id(orphan), half_kept]


def _until_gone(paths: list[Path], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while left := [path.name for path in paths if path.exists()]:
        assert time.monotonic() < deadline, left
        time.sleep(0.1)


async def test_spools_no_session_names_are_dropped_at_start(
        upstream: EmulatorProcess, tmp_path: Path, repo: str) -> None:
    """A process that died after an upload's session was deleted but before its spool was
    (or halfway through keeping a spool under its digest) leaves files no request can reach
    again. The next start drops them; a spool whose session lives on is kept and resumed."""
    live_data = os.urandom(2 * MiB + 7)
    with GatewayProcess(tmp_path / "gw", upstream_url=upstream.url) as gateway:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)) as session:
            client = OciClient(session, gateway.url)
            live = await client.start(repo)
            assert (await client.patch(live, live_data[:MiB], 0)).status == 202
            orphan = await client.start(repo)
            assert (await client.patch(orphan, os.urandom(MiB), 0)).status == 202
            gateway.stop()
            orphans = _leave_orphans(gateway, orphan, live)
            gateway.start()
            _until_gone(orphans)
            assert _spool_heads(gateway) == [live_data[:64]]  # the live upload's is kept
            r = await client.patch(live, live_data[MiB:], MiB)
            assert r.status == 202, r.body
            r = await client.put(live, digest_of(live_data))
            assert r.status == 201, r.body
            assert await client.get_blob(repo, digest_of(live_data)) == live_data
            assert _spool_heads(gateway) == []
