"""Upstream outage: with ECR gone, /readyz fails and requests get 503 + Retry-After at once
(the circuit breaker spares them the retry budget); when it returns, everything recovers by
itself. Content the gateway already holds keeps being served."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.reliability.helpers import log_text
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, digest_of


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[EmulatorProcess, GatewayProcess]]:
    """An emulator of its own (this test kills it) and a gateway with the default retry
    budget (10 s) and call timeout, except where a test says otherwise."""
    emulator = EmulatorProcess(tmp_path / "ecr")
    emulator.start()
    gateway = GatewayProcess(tmp_path / "gw", {"upstream": {"call_timeout_seconds": 2.0}},
                             upstream_url=emulator.url)
    gateway.start()
    yield emulator, gateway
    gateway.stop()
    if emulator.running:
        os.kill(emulator.pid, signal.SIGCONT)
    emulator.stop()


async def _timed(session: aiohttp.ClientSession, method: str, url: str
                 ) -> tuple[int, str | None, str | None, float]:
    started = time.monotonic()
    async with session.request(method, url) as r:
        body = await r.read()
        code = None
        if body and r.content_type == "application/json":
            errors = (await r.json()).get("errors")
            code = errors[0]["code"] if errors else None
        return r.status, code, r.headers.get("Retry-After"), time.monotonic() - started


async def test_dead_upstream_fails_fast_and_recovers(
        pair: tuple[EmulatorProcess, GatewayProcess]) -> None:
    emulator, gateway = pair
    name = "outage/app"
    async with aiohttp.ClientSession() as session:
        oci = OciClient(session, gateway.url)
        digest, manifest = await oci.push_image(name, "v1", [os.urandom(3000)])
        async with session.get(f"{gateway.url}/readyz") as r:
            assert r.status == 200

        emulator.kill9()
        started = time.monotonic()
        while True:  # a success stands for a second (gateway/ecr/reachability.py)
            async with session.get(f"{gateway.url}/readyz") as r:
                if r.status == 503:
                    assert r.headers.get("Retry-After")
                    break
                assert r.status == 200 and time.monotonic() - started < 3
            await asyncio.sleep(0.1)
        ready_seconds = time.monotonic() - started

        # Requests that need ECR: 503 UNAVAILABLE with Retry-After, quickly, 20 at once.
        missing = digest_of(os.urandom(8))
        requests = [("HEAD", f"/v2/{name}/blobs/{missing}"), ("GET", f"/v2/{name}/tags/list"),
                    ("POST", f"/v2/{name}/blobs/uploads/"),
                    ("GET", f"/v2/{name}/manifests/other")] * 5
        started = time.monotonic()
        answers = await asyncio.gather(*(_timed(session, m, gateway.url + p)
                                         for m, p in requests))
        wall = time.monotonic() - started
        for status, code, retry_after, _ in answers:
            assert status == 503 and retry_after, answers
            assert code in (None, "UNAVAILABLE")  # HEAD answers carry no body
        slowest = max(seconds for *_, seconds in answers)
        # What the gateway holds needs no ECR: a manifest by digest is still served.
        async with session.get(f"{gateway.url}/v2/{name}/manifests/{digest}") as r:
            served_from_cache = r.status == 200 and await r.read() == manifest

        emulator.start()  # same port: recovery needs nothing but time
        started = time.monotonic()
        while True:
            async with session.get(f"{gateway.url}/readyz") as r:
                if r.status == 200:
                    break
            assert time.monotonic() - started < 15, "the gateway did not recover"
            await asyncio.sleep(0.2)
        recovered = time.monotonic() - started
        async with session.get(f"{gateway.url}/v2/{name}/manifests/v1") as r:
            assert r.status == 200 and await r.read() == manifest
        again = await oci.push_image(name, "v2", [os.urandom(2000)])
        assert again[0]
    print(f"\noutage: /readyz 503 after {ready_seconds:.2f}s; 20 requests all 503+Retry-After "
          f"in {wall:.2f}s (slowest {slowest:.2f}s); cached manifest served: "
          f"{served_from_cache}; ready again {recovered:.2f}s after the emulator returned")
    assert ready_seconds < 3
    assert slowest < 4  # not the 10 s retry budget per request
    assert "Traceback" not in log_text(gateway, emulator)


async def test_hung_upstream_is_bounded_by_the_call_timeout(
        pair: tuple[EmulatorProcess, GatewayProcess]) -> None:
    """An upstream that accepts connections but never answers (stopped): calls time out after
    call_timeout_seconds (2 s here), the breaker opens, later requests fail at once."""
    emulator, gateway = pair
    name = "outage/hung"
    async with aiohttp.ClientSession() as session:
        await OciClient(session, gateway.url).push_image(name, "v1", [os.urandom(1000)])
        os.kill(emulator.pid, signal.SIGSTOP)
        try:
            answers = await asyncio.gather(*(
                _timed(session, "HEAD", f"{gateway.url}/v2/{name}/blobs/"
                                        f"{digest_of(os.urandom(8))}") for _ in range(6)))
            late = await _timed(session, "GET", f"{gateway.url}/v2/{name}/tags/list")
        finally:
            os.kill(emulator.pid, signal.SIGCONT)
    slowest = max(seconds for *_, seconds in answers)
    print(f"\nhung upstream: 6 concurrent requests 503 within {slowest:.2f}s, "
          f"the next one in {late[3]:.2f}s")
    assert all(status == 503 and retry_after for status, _, retry_after, _ in answers)
    assert slowest < 12
    assert late[0] == 503 and late[3] < 1.5
