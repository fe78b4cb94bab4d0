"""Redis down while replicas serve: stopped (its port refuses connections) or frozen
(SIGSTOP: connections are accepted, nothing is answered). A request that needs Redis gets
503 UNAVAILABLE with Retry-After within seconds (it waited about 24 s, and for ever on a
frozen Redis: more than 90 s), later ones at once without a word to Redis, the log says so
once (never the password), ``ecr_gateway_redis_down`` and /readyz tell, and the replicas
take Redis up again by themselves within seconds of its return.

Real processes: redis-server (with a password), an emulator, two gateway replicas."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.state.conftest import replica_pair
from tests.integration.state.test_replicas import (
    OCI_MANIFEST,
    OCTET,
    digest_of,
    finish,
    patch,
    start,
)
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer

PASSWORD = "s3cret-redis-pw-4821"
# Well under the 24 s (12 tries) a request waited before, with room for a loaded machine.
BOUND = 8.0


def _state(server: RedisServer) -> dict[str, Any]:
    return {"backend": "redis", "redis_url": f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0",
            "key_prefix": f"down{os.urandom(3).hex()}:"}


@contextmanager
def _down(server: RedisServer, how: str) -> Iterator[None]:
    """Redis stopped (``how`` "stopped": started again after) or frozen ("frozen")."""
    assert server.process is not None
    if how == "stopped":
        server.stop()
    else:
        os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        if how == "stopped":
            server.start()
        else:
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGCONT)


async def _timed(session: aiohttp.ClientSession, method: str, url: str,
                 **kwargs: Any) -> tuple[int, float, dict[str, Any], str | None]:
    """(status, seconds, JSON body, Retry-After); a request that got no answer within 20 s
    is status 0 (the old code's frozen Redis)."""
    began = time.monotonic()
    try:
        async with session.request(method, url, allow_redirects=False,
                                   timeout=aiohttp.ClientTimeout(total=20), **kwargs) as r:
            text = await r.text()
            body = json.loads(text) if text.startswith("{") else {}
            return r.status, time.monotonic() - began, body, r.headers.get("Retry-After")
    except TimeoutError:
        return 0, time.monotonic() - began, {}, None


async def _redis_down_metric(session: aiohttp.ClientSession, gateway: GatewayProcess) -> str:
    try:
        async with session.get(f"{gateway.url}/metrics",
                               timeout=aiohttp.ClientTimeout(total=20)) as r:
            return next((line for line in (await r.text()).splitlines()
                         if line.startswith("ecr_gateway_redis_down ")), "")
    except TimeoutError:
        return "no answer within 20 s"


@pytest.mark.parametrize("how", ["stopped", "frozen"])
async def test_requests_that_need_redis_get_503_within_seconds_and_recover(
        upstream: EmulatorProcess, tmp_path: Path, how: str) -> None:
    server = RedisServer(tmp_path / "redis", password=PASSWORD)
    name = f"down/{how}-{os.urandom(3).hex()}"
    blob, config = os.urandom(3000), b"{}"
    with server, replica_pair(tmp_path, upstream, _state(server)) as (a, b):
        async with aiohttp.ClientSession() as session:
            # Before: an upload begun (one chunk), one just opened, a blob staged on a only
            # (no manifest references it: b finds it through Redis).
            chunked = await patch(session, a, await start(session, a, name), b"x" * 1000, 0)
            opened = await start(session, a, name)
            await finish(session, a, await start(session, a, name), digest_of(blob), blob)
            await finish(session, a, await start(session, a, name), digest_of(config), config)
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": digest_of(config), "size": len(config)},
                "layers": []}).encode()
            sep = "&" if "?" in opened else "?"
            asked = {
                "POST": ("POST", f"{a.url}/v2/{name}/blobs/uploads/", {}),
                "PATCH": ("PATCH", a.url + chunked, {"data": b"y" * 100, "headers": {
                    **OCTET, "Content-Range": "1000-1099"}}),
                "PUT": ("PUT", f"{a.url}{opened}{sep}digest={digest_of(b'z' * 10)}",
                        {"data": b"z" * 10, "headers": OCTET}),
                "GET staged blob through b": ("GET", f"{b.url}/v2/{name}/blobs/"
                                                     f"{digest_of(blob)}", {}),
                "PUT manifest": ("PUT", f"{a.url}/v2/{name}/manifests/v1",
                                 {"data": manifest, "headers": {"Content-Type": OCI_MANIFEST}}),
                "readyz": ("GET", f"{a.url}/readyz", {}),
            }
            answers: dict[str, tuple[int, float, dict[str, Any], str | None]] = {}
            with _down(server, how):
                for what, (method, url, kwargs) in asked.items():
                    answers[what] = await _timed(session, method, url, **kwargs)
                # Taken as down: the same requests again, each at once.
                again = [await _timed(session, "POST", f"{a.url}/v2/{name}/blobs/uploads/")
                         for _ in range(5)]
                down_metric = await _redis_down_metric(session, a)
            returned = time.monotonic()
            while (await _timed(session, "POST", f"{a.url}/v2/{name}/blobs/uploads/"))[0] != 202:
                assert time.monotonic() - returned < 30, "no recovery"
                await asyncio.sleep(0.05)
            recovered = time.monotonic() - returned
            # b, through Redis again (it holds no copy, ECR does not serve it). A restarted
            # Redis is empty: 404 until a, subscribed again, recorded its staged copies anew.
            while True:
                async with session.get(f"{b.url}/v2/{name}/blobs/{digest_of(blob)}") as r:
                    if r.status == 200:
                        assert await r.read() == blob
                        break
                    assert r.status in (503, 404 if how == "stopped" else 503), await r.text()
                assert time.monotonic() - returned < 30, "no recovery on b"
                await asyncio.sleep(0.05)
            recovered_b = time.monotonic() - returned
            async with session.get(f"{a.url}/readyz") as r:
                assert r.status == 200, await r.text()
            up_metric = await _redis_down_metric(session, a)

    print(f"\nRedis {how}: " + ", ".join(f"{what} {status} in {seconds:.2f}s"
                                         for what, (status, seconds, _, _) in answers.items())
          + f"; 5 more POSTs {max(s for _, s, _, _ in again):.3f}s at most; requests "
            f"succeed again {recovered:.2f}s (a) and {recovered_b:.2f}s (b) after Redis "
            "returned")
    for what, (status, seconds, body, retry_after) in answers.items():
        assert seconds < BOUND, (what, status, seconds)
        if what == "PUT manifest":  # ECR took it; the other replicas' notice is what fails
            assert status == 201, (what, status, body)
            continue
        assert status == 503 and retry_after, (what, status, body)
        if what != "readyz":
            assert body["errors"][0]["code"] == "UNAVAILABLE", (what, body)
    assert answers["readyz"][2]["reason"] == "the upload session store is unavailable"
    assert all(status == 503 and seconds < 1.0 for status, seconds, _, _ in again), again
    assert recovered < 5.0 and recovered_b < 5.0
    assert down_metric == "ecr_gateway_redis_down 1.0" and up_metric == "ecr_gateway_redis_down 0.0"
    for gateway in (a, b):
        log = "\n".join(gateway.log_lines)
        assert PASSWORD not in log
        assert "Traceback" not in log
        # Once for the outage, not once a request.
        assert log.count("taken as down;") == 1, log
        assert log.count("answers again after") == 1, log
        assert "upload session store unavailable" not in log
        assert "not ready" not in log
    said = next(line for line in a.log_lines if "taken as down;" in line)
    assert f"Redis at 127.0.0.1:{server.port} did not answer within 2s (" in said
    if how == "stopped":  # what the Redis client's last try met, not only the deadline
        assert f"connecting to 127.0.0.1:{server.port}" in said, said
