"""Uploads as an attacker uses them: a client allowed to push opens uploads and never
finishes them. Each upload's bytes are spooled to the gateway's disk while they go to ECR,
and the spools never take more than ``blobs.staging.spools_max_bytes``: past it an upload
goes on unspooled. A tail under ECR's part minimum that lived in its spool alone moves into
the session store first, so nothing the client was told is received is lost, even to a
kill -9 right after; every upload still completes with the right bytes."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import aiohttp

from tests.integration.reliability.helpers import faults_admin, http_request, set_faults
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, OciClient, digest_of

MiB = 1024 * 1024
BOUND = 7 * MiB
SENT = 3 * MiB  # under ECR's 5 MiB minimum part: the tail stays in the gateway


def _spooled(spools: Path) -> list[int]:
    return [entry.stat().st_size for entry in spools.iterdir()]


async def test_unfinished_uploads_stop_at_the_spool_bound_and_lose_nothing(
        upstream: EmulatorProcess, tmp_path: Path, repo: str) -> None:
    config = {"blobs": {"staging": {"spools_max_bytes": BOUND}}}
    layers = [os.urandom(14 * MiB + i) for i in range(3)]
    with GatewayProcess(tmp_path / "gateway", config, upstream_url=upstream.url) as gateway:
        spools = gateway.data_dir / "staging" / "spool"
        locations = []
        async with aiohttp.ClientSession() as session:
            client = OciClient(session, gateway.url)
            for layer in layers:
                reply = await client.patch(await client.start(repo), layer[:SENT], 0)
                assert reply.status == 202 and reply.headers["Range"] == f"0-{SENT - 1}"
                locations.append(reply.headers["Location"])
            # Two spools fit; the third upload went on without one.
            assert _spooled(spools) == [SENT, SENT]
            assert await gateway.logged("goes on unspooled")

            # The first upload's next chunk does not fit either: when its first part is cut
            # (ECR's 10 MiB), the spool that alone holds its acknowledged tail is dropped,
            # and the process dies while that part is on its way to ECR (held there).
            set_faults(upstream, [{"action": "UploadLayerPart", "latency": 4, "count": 1}],
                       seed=1)
            chunk = layers[0][SENT:]
            head = http_request("PATCH", locations[0], gateway.host, [
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", f"{SENT}-{len(layers[0]) - 1}"),
                ("Content-Length", str(len(chunk)))], chunk[:8 * MiB])
            _, writer = await asyncio.open_connection(*gateway.host.split(":"))
            writer.write(head)
            await writer.drain()
            for _ in range(200):
                if len(_spooled(spools)) == 1:
                    break
                await asyncio.sleep(0.05)
            assert _spooled(spools) == [SENT]
            gateway.kill9()
            writer.close()
            faults_admin(upstream, "DELETE")

        gateway.start()
        async with aiohttp.ClientSession() as session:
            client = OciClient(session, gateway.url)
            for layer, location in zip(layers, locations, strict=True):
                async with session.get(client.url(location)) as status:
                    assert status.status == 204 and status.headers["Range"] == f"0-{SENT - 1}"
                reply = await client.patch(location, layer[SENT:], SENT)
                assert reply.status == 202, (reply.status, reply.body)
                done = await client.put(reply.headers["Location"], digest_of(layer))
                assert done.status == 201, (done.status, done.body)
            assert _spooled(spools) == []

            # Room again: a new upload is spooled.
            reply = await client.patch(await client.start(repo), layers[0][:SENT], 0)
            assert reply.status == 202
            assert _spooled(spools) == [SENT]

            config_blob = b'{"architecture":"amd64","os":"linux"}'
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": await client.push_blob(
                    repo, config_blob), "size": len(config_blob)},
                "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(layer),
                            "size": len(layer)} for layer in layers]}).encode()
            async with session.put(client.url(f"/v2/{repo}/manifests/v1"), data=manifest,
                                   headers={"Content-Type": OCI_MANIFEST}) as r:
                assert r.status == 201, await r.text()
            for layer in layers:
                assert await client.get_blob(repo, digest_of(layer)) == layer
        log = "\n".join(gateway.log_lines)
        assert "Traceback" not in log and "lost its staged tail" not in log
