"""``limits.max_abandoned_upload_bytes_per_client`` with replicas sharing one Redis. A replica
counts the bytes a client's PATCHes through it had ECR hold for uploads still open, and gives
them back when the upload completes: through it. A client whose PUT reached another replica
(a load balancer picks one per connection) stayed counted there, on no upload ECR still held,
until that replica's sweep found the session gone an ``uploads.idle_timeout_seconds`` later
(an hour by default): a client pushing its bound's worth of layers got 429 on every POST
through that replica for the hour, with ECR holding nothing of it. Before a client is refused
for its open uploads, a replica now asks the store whether they are still open."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp

from tests.integration.state.conftest import redis_state, replica
from tests.support.emulator import EmulatorProcess
from tests.support.oci import OciClient, digest_of
from tests.support.redis import RedisServer

MiB = 1024 * 1024
LAYER = 20 * MiB  # two of the emulator's 10 MiB parts: all of it reaches ECR at the PATCH
BOUND = 2 * LAYER


async def test_uploads_completed_through_another_replica_do_not_count_against_the_client(
        upstream: EmulatorProcess, redis_server: RedisServer, tmp_path: Path, repo: str) -> None:
    state = redis_state(redis_server)
    limits = {"limits": {"max_abandoned_upload_bytes_per_client": BOUND}}
    with replica(tmp_path / "a", upstream, state, **limits) as a, \
            replica(tmp_path / "b", upstream, state, **limits) as b:
        async with aiohttp.ClientSession() as session:
            via_a, via_b = OciClient(session, a.url), OciClient(session, b.url)
            for _ in range(BOUND // LAYER + 1):  # one more than the bound holds at once
                location = await via_b.start(repo)
                layer = os.urandom(LAYER)
                sent = await via_b.patch(location, layer, 0)
                assert sent.status == 202, (sent.status, sent.body[:300])
                done = await via_a.put(sent.headers["Location"], digest_of(layer))
                assert done.status == 201, (done.status, done.body[:300])
                assert await via_a.get_blob(repo, digest_of(layer)) == layer
    assert "Traceback" not in "\n".join(a.log_lines + b.log_lines)
