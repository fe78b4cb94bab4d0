"""Replicas sharing Redis enforce the per-client bounds together, each against its own
settings: one that counts IPv6 clients by their /48 where the others count by the /64, or
that lets a client keep more, hands a client what the others refuse, and nothing said so.
Each replica now writes the settings it enforces to Redis and says which ones a live
replica holds otherwise (gateway/state/agreement.py)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from gateway.config import Config
from gateway.state.agreement import ReplicaAgreement, agreed_settings
from gateway.state.connect import RedisConnection
from tests.integration.state.conftest import redis_state, replica, replica_pair
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.polling import until
from tests.support.redis import RedisServer

DISAGREEING = "ecr_gateway_replica_settings_disagreeing "
SECRET = "mirror-password-not-for-redis"


async def _disagreeing(gateway: GatewayProcess) -> float:
    async with aiohttp.ClientSession() as session, \
            session.get(f"{gateway.url}/metrics") as reply:
        text = await reply.text()
    line = next(line for line in text.splitlines() if line.startswith(DISAGREEING))
    return float(line.split()[1])


async def _entries(redis_server: RedisServer, prefix: str) -> dict[str, str]:
    raw = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        entries: dict[str, str] = await raw.hgetall(f"{prefix}replicas")
        return entries
    finally:
        await raw.aclose()


async def test_a_replica_enforcing_other_bounds_is_named(
        upstream: EmulatorProcess, redis_server: RedisServer, tmp_path: Path) -> None:
    state = redis_state(redis_server)
    password = tmp_path / "upstream-password"
    password.write_text(SECRET)
    password.chmod(0o600)
    mirrors = {"docker.io": {"repository_prefix": "hub", "upstream": {
        "url": "http://127.0.0.1:9", "username": "puller", "password_file": str(password)}}}
    with replica(tmp_path / "a", upstream, state, mirrors=mirrors) as a, \
            replica(tmp_path / "b", upstream, state, mirrors=mirrors,
                    limits={"client_key": {"ipv6_prefix_length": 48},
                            "max_upload_tail_bytes_per_client": 1 << 30}) as b:
        # b compared as it started, a's entry already there.
        assert await b.logged("enforce different settings")
        warning = next(line for line in b.log_lines if "enforce different settings" in line)
        assert "limits.client_key" in warning and '"ipv6_prefix_length":48' in warning
        assert '"ipv6_prefix_length":64' in warning  # a's value, named with a's host and pid
        assert "limits.max_upload_tail_bytes_per_client: here 1073741824" in warning
        assert "trusted_proxies" not in warning  # the same on both
        assert await _disagreeing(b) == 2
        entries = await _entries(redis_server, state["key_prefix"])
        assert len(entries) == 2
        assert SECRET not in json.dumps(entries)  # the mirror's password file is never read here
        assert str(password) not in json.dumps(entries)  # mirrors compared by digest only
    # A stopped replica takes its entry out.
    assert await _entries(redis_server, state["key_prefix"]) == {}
    assert "Traceback" not in "\n".join(a.log_lines + b.log_lines)


async def test_replicas_holding_the_same_settings_say_nothing(
        upstream: EmulatorProcess, redis_server: RedisServer, tmp_path: Path) -> None:
    state = redis_state(redis_server)
    limits = {"client_key": {"ipv6_prefix_length": 56}}
    with replica_pair(tmp_path, upstream, state, limits=limits) as (a, b):
        async def both_written() -> bool:
            return len(await _entries(redis_server, state["key_prefix"])) == 2

        assert await until(both_written, 10)  # each writes as it starts
        assert await _disagreeing(b) == 0
        assert await _disagreeing(a) == 0
        assert not any("enforce different settings" in line
                       for line in a.log_lines + b.log_lines)


async def test_entries_no_replica_wrote_are_dropped_and_the_others_still_compared(
        redis_server: RedisServer) -> None:
    """Whatever else lands in the hash (bytes that are no UTF-8, JSON nested past Python's
    recursion limit) made every check fail, said at debug level only: the differing replica
    was never named again, and the stray entries stayed. The hash had no expiry: the entries
    of replicas all killed at once stayed for good."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    own = Config()
    other = {"host": "node-b", "pid": 7, "at": time.time(),
             "settings": {**agreed_settings(own), "auth.mode": "htpasswd"}}
    raw = aioredis.Redis.from_url(redis_server.url)
    agreement = ReplicaAgreement(RedisConnection(redis_server.url), prefix, own)
    try:
        await raw.hset(f"{prefix}replicas", mapping={
            "b": json.dumps(other), "not-utf-8": b"\xff\xfe{", b"\xff": "{}",
            "deep": "[" * 100_000, "list": "[1]", "no-time": "{}", "nan": "{\"at\": NaN}"})
        found = await agreement.check()
        assert found == {"auth.mode": [("node-b (pid 7)", "htpasswd")]}
        kept = set(await raw.hkeys(f"{prefix}replicas"))
        assert kept == {b"b", agreement._id.encode()}  # and the entry it wrote
        # Every replica killed: the hash goes when the last entry stops being live.
        assert 0 < await raw.ttl(f"{prefix}replicas") <= 180
    finally:
        await agreement.close()
        await raw.aclose()
