"""The cross-replica fill lock of a blob (proxy mode, gateway/state/fills.py) is taken only by
a read its repository may make. Otherwise a client allowed to read nothing but its own
repository, asking there for a blob it cannot read (any digest of another tenant's image),
holds the lock every replica's first readers of that blob wait on, for as long as storage
takes to refuse it, request after request. Real processes: an emulator answering slowly,
two replicas with htpasswd users, redis-server."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from tests.integration.auth.helpers import basic, write_htpasswd
from tests.integration.mirror.helpers import push_image
from tests.integration.state.conftest import redis_state, replica
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer

PASSWORDS = {"alice": "alice-pw", "mallory": "mallory-pw"}
ALICE, MALLORY = basic("alice", "alice-pw"), basic("mallory", "mallory-pw")
SLOW = 1.5  # seconds storage takes to answer each call (ECR answers in tens of ms)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def test_a_read_of_a_blob_the_repository_lacks_never_holds_its_fill_lock(
        upstream: EmulatorProcess, gateway: GatewayProcess, redis_server: RedisServer,
        tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    victim = await push_image(gateway.url, f"alice/app-{suffix}", layer_sizes=(300_000,))
    await push_image(gateway.url, f"mallory/own-{suffix}", layer_sizes=(1000,))
    digest = sha256(victim.layers[0])
    users = write_htpasswd(tmp_path / "htpasswd", PASSWORDS)
    auth = {"mode": "htpasswd", "htpasswd_file": str(users),
            "rules": [{"repository": "{user}/**", "users": ["*"], "actions": ["pull"]}]}
    state = redis_state(redis_server)
    raw = aioredis.Redis.from_url(redis_server.url)
    lock = f"{state['key_prefix']}fill:{{{digest}}}"

    def config(label: str) -> dict[str, object]:
        return {"auth": auth, "blobs": {"mode": "proxy",
                                        "cache": {"path": str(tmp_path / label / "cache")}}}

    try:
        with replica(tmp_path / "a", upstream, state, **config("a")) as a, \
                replica(tmp_path / "b", upstream, state, **config("b")) as b:
            for action in ("GetDownloadUrlForLayer", "BatchCheckLayerAvailability"):
                upstream.control("POST", "faults",
                                 {"action": action, "latency": SLOW, "rate": 1.0})
            async with aiohttp.ClientSession() as session:

                async def read(gw: GatewayProcess, name: str,
                               headers: dict[str, str]) -> tuple[int, bytes]:
                    async with session.get(f"{gw.url}/v2/{name}/blobs/{digest}",
                                           headers=headers) as r:
                        return r.status, await r.read()

                # mallory may read her own repository only, which lacks alice's layer.
                attack = asyncio.create_task(read(a, f"mallory/own-{suffix}", MALLORY))
                await asyncio.sleep(SLOW / 3)  # her read is waiting for storage's answer
                held = await raw.exists(lock)
                legit = asyncio.create_task(read(b, victim.name, ALICE))
                refused, read_back = await attack, await legit
                assert refused[0] == 404
                assert not held, "a read refused for want of the blob held its fill lock"
                assert read_back == (200, victim.layers[0])
    finally:
        upstream.clear_faults()
        await raw.aclose()
