"""Blobs read back before any image references them come from the gateway's staging store:
checked once after a restart before they are served, and a staged file removed between the
lookup and the send gives way to ECR."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.reliability.helpers import faults_admin
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient


@pytest.fixture
def own_gateway(upstream: EmulatorProcess, tmp_path: Path) -> Iterator[GatewayProcess]:
    """A gateway of this test alone: it is restarted and its staging store edited."""
    with GatewayProcess(tmp_path / "gw", upstream_url=upstream.url) as gw:
        yield gw


def _staged(gw: GatewayProcess, digest: str) -> Path:
    return gw.data_dir / "staging" / "blobs" / "sha256" / digest.split(":", 1)[1]


async def _get(gw: GatewayProcess, repo: str, digest: str) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gw.url}/v2/{repo}/blobs/{digest}") as r:
            return r.status, r.headers.get("Content-Type", ""), await r.read()


async def test_staged_files_changed_while_down_are_not_served(
        own_gateway: GatewayProcess, repo: str) -> None:
    """Staged files whose bytes changed while the gateway was down (one flipped byte, one
    truncated) are dropped on their first read after the restart: the read goes to ECR,
    which cannot serve a blob no image references, so the client gets a clean 404 rather
    than wrong bytes. An intact staged file is still served from the store."""
    blobs = [os.urandom(300_000 + i) for i in range(3)]
    async with aiohttp.ClientSession() as session:
        client = OciClient(session, own_gateway.url)
        digests = [await client.push_blob(repo, data) for data in blobs]
    for digest, data in zip(digests, blobs, strict=True):
        assert await _get(own_gateway, repo, digest) == (200, "application/octet-stream",
                                                         data)
    intact, flipped, truncated = digests
    own_gateway.stop()
    changed = bytearray(blobs[1])
    changed[len(changed) // 2] ^= 0xFF
    _staged(own_gateway, flipped).write_bytes(bytes(changed))
    os.truncate(_staged(own_gateway, truncated), 1000)
    own_gateway.start()

    assert await _get(own_gateway, repo, intact) == (200, "application/octet-stream",
                                                     blobs[0])
    for digest in (flipped, truncated):
        status, content_type, body = await _get(own_gateway, repo, digest)
        assert (status, content_type) == (404, "application/json"), body
        assert json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"
        assert not _staged(own_gateway, digest).exists()
    assert _staged(own_gateway, intact).exists()


async def test_staged_file_forgotten_before_the_send_is_read_from_ecr(
        own_gateway: GatewayProcess, upstream: EmulatorProcess, repo: str) -> None:
    """A read finds the staged copy, then, before it sends it, a manifest referencing the
    blob is pushed and the staged copy forgotten: the read gets the bytes from ECR instead
    of a bare 404. The window is held open by delaying the membership check the read makes
    after the lookup (the restart forgot what the repository holds)."""
    layer, config = os.urandom(400_000), b'{"architecture":"amd64","os":"linux"}'
    async with aiohttp.ClientSession() as session:
        client = OciClient(session, own_gateway.url)
        layer_digest = await client.push_blob(repo, layer)
        config_digest = await client.push_blob(repo, config)
    own_gateway.restart()
    faults_admin(upstream, "POST", {"action": "BatchCheckLayerAvailability", "latency": 2.0,
                                    "count": 1})
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": len(layer)}]}).encode()
    read = asyncio.create_task(_get(own_gateway, repo, layer_digest))
    await asyncio.sleep(1.0)
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{own_gateway.url}/v2/{repo}/manifests/v1", data=manifest,
                               headers={"Content-Type": "application/vnd.oci.image.manifest"
                                        ".v1+json"}) as r:
            assert r.status == 201, await r.text()
    assert not _staged(own_gateway, layer_digest).exists()  # ECR serves it from now on
    assert await read == (200, "application/octet-stream", layer)



async def test_a_manifest_elsewhere_leaves_the_staged_copy_other_repositories_read(
        own_gateway: GatewayProcess, repo: str) -> None:
    """Repository B uploads a layer (no image yet: only the staged copy serves it); another
    client pushes the same layer and an image of it into A. B still reads the layer: the
    store is keyed by digest, and ECR serves a layer only where an image references it.
    Once B's own image references it, the copy goes."""
    layer = os.urandom(300_000)
    other = f"{repo}-a"
    async with aiohttp.ClientSession() as session:
        client = OciClient(session, own_gateway.url)
        digest = await client.push_blob(repo, layer)
        await client.push_image(other, "v1", [layer])
        assert await _get(own_gateway, repo, digest) == (200, "application/octet-stream",
                                                         layer)
        assert _staged(own_gateway, digest).exists()
        await client.push_image(repo, "v1", [layer])
    assert not _staged(own_gateway, digest).exists()  # ECR serves it in both now

async def test_staged_bytes_and_session_tails_are_private(
        own_gateway: GatewayProcess, repo: str) -> None:
    """Uploads of private repositories stay the gateway user's: the staging folder and the
    session records (which hold upload tails) are mode 0700, a record is 0600, also when an
    older version left the folders open to everyone. A link in place of the staging folder,
    or a folder of another user's, stops the start with the setting named."""
    async with aiohttp.ClientSession() as session:
        client = OciClient(session, own_gateway.url)
        await client.push_blob(repo, os.urandom(1000))
        async with session.post(f"{own_gateway.url}/v2/{repo}/blobs/uploads/") as r:
            location = r.headers["Location"]
        async with session.patch(own_gateway.url + location, data=b"tail",
                                 headers={"Content-Type": "application/octet-stream"}) as r:
            assert r.status == 202
    staging, sessions = own_gateway.data_dir / "staging", own_gateway.data_dir / "sessions"
    records = list(sessions.glob("*.session"))
    assert records
    for path, mode in ((staging, 0o700), (sessions, 0o700), (records[0], 0o600)):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path

    own_gateway.stop()
    os.chmod(staging, 0o755)
    os.chmod(sessions, 0o777)
    own_gateway.start()
    assert stat.S_IMODE(staging.stat().st_mode) == stat.S_IMODE(sessions.stat().st_mode) == 0o700

    own_gateway.stop()
    staging.rename(own_gateway.data_dir / "elsewhere")
    staging.symlink_to(own_gateway.data_dir / "elsewhere")
    data = own_gateway.data_dir
    refused = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(data / "config.yaml"),
         "--listen", "127.0.0.1:0", "--data-dir", str(data)],
        capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "refusing to start: data_dir: " in refused.stderr
    assert "staging is not a folder" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize("answer", ["LayersNotFoundException", "LayerInaccessibleException"])
async def test_a_blob_not_referenced_yet_reads_back_whichever_way_ecr_says_so(
        upstream: EmulatorProcess, tmp_path: Path, answer: str) -> None:
    """ECR serves a layer only once an image of the repository references it. For one
    uploaded and not referenced yet, its API reference names LayerInaccessibleException ("not
    associated with an image"); LayersNotFoundException is what has been seen. The gateway
    took only the latter for "held, not served yet": with a blob cache holding the digest
    (read from another repository), a read of a blob pushed but not referenced yet got 404
    on the other answer, where its staged copy serves it."""
    config = {"blobs": {"mode": "proxy", "cache": {"path": str(tmp_path / "cache")}}}
    layer, run = os.urandom(64 * 1024), uuid.uuid4().hex[:8]
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
        async with aiohttp.ClientSession() as session:
            client = OciClient(session, gw.url)
            await client.push_image(f"cached-{run}/app", "v1", [layer])
            digest = await client.push_blob(f"fresh-{run}/app", layer)
            assert await client.get_blob(f"cached-{run}/app", digest) == layer  # now cached
            faults_admin(upstream, "DELETE")
            faults_admin(upstream, "POST", {"action": "GetDownloadUrlForLayer", "error": answer,
                                            "count": 100})
            try:
                status, _, body = await _get(gw, f"fresh-{run}/app", digest)
            finally:
                faults_admin(upstream, "DELETE")
    assert (status, body == layer) == (200, True), (status, body[:300])
