"""A Redis that requires a password: the gateway reads it from state.redis_password_file
(a mounted Secret), never from the URL, and uploads work; without it the store refuses."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp

from tests.integration.state.conftest import redis_state, replica
from tests.support.emulator import EmulatorProcess
from tests.support.oci import OciClient, digest_of
from tests.support.redis import RedisServer


async def test_upload_through_a_password_protected_redis(upstream: EmulatorProcess,
                                                         tmp_path: Path, repo: str) -> None:
    password = os.urandom(12).hex()
    secret = tmp_path / "redis-password"
    secret.write_text(password + "\n")  # as a Secret file often ends
    with RedisServer(tmp_path / "redis", password=password) as server:
        state = redis_state(server, redis_password_file=str(secret))
        with replica(tmp_path / "gw", upstream, state) as gateway:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{gateway.url}/readyz") as ready:
                    assert ready.status == 200, await ready.text()
                blob = os.urandom(4096)
                client = OciClient(session, gateway.url)
                await client.push_image(repo, "v1", [blob])
                assert await client.get_blob(repo, digest_of(blob)) == blob
            assert not any(password in line for line in gateway.log_lines)
        with replica(tmp_path / "nopw", upstream, redis_state(server)) as gateway:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{gateway.url}/readyz") as ready:
                    assert ready.status == 503  # the store refuses a client without it
