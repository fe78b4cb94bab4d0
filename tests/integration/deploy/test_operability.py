"""Operability of a running gateway: Prometheus metrics, JSON logs without secrets, readiness
that follows the upstream and the state store, and graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, digest_of
from tests.support.redis import RedisServer

MiB = 1024 * 1024
SECRET = "gateway-test-secret"  # what GatewayProcess configures as the secret access key


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample (labels must match exactly, in any order)."""
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2] or ""))
        if found == labels:
            return float(match[3])
    raise AssertionError(f"no sample {name}{labels}")


async def _scrape(session: aiohttp.ClientSession, gateway: GatewayProcess) -> str:
    async with session.get(f"{gateway.url}/metrics") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        return await r.text()


def _post_fault(emulator: EmulatorProcess, action: str, error: str, count: int) -> None:
    emulator.inject_fault(action, error, count=count)


async def test_metrics_cover_requests_bytes_sessions_and_upstream_calls(
        upstream: EmulatorProcess, gateway: GatewayProcess) -> None:
    name = f"ops/metrics-{os.urandom(3).hex()}"
    layer = os.urandom(6 * MiB + 5)
    async with aiohttp.ClientSession() as session:
        oci = OciClient(session, gateway.url)
        before = await _scrape(session, gateway)
        await oci.push_image(name, "v1", [layer])
        async with session.get(f"{gateway.url}/v2/{name}/manifests/nope") as r:
            assert r.status == 404
        async with session.get(f"{gateway.url}/v2/ops/never-created/tags/list") as r:
            assert r.status == 404
        open_upload = await oci.start(name)
        _post_fault(upstream, "ListImages", "ThrottlingException", 2)
        async with session.get(f"{gateway.url}/v2/{name}/tags/list") as r:
            assert r.status == 200  # two throttles retried away
        for _ in range(2):
            async with session.get(f"{gateway.url}/readyz") as r:
                assert r.status == 200
        text = await _scrape(session, gateway)
        async with session.delete(gateway.url + open_upload) as r:
            assert r.status == 204
        after_cancel = await _scrape(session, gateway)

    def grew(name: str, **labels: str) -> float:
        try:
            old = _metric(before, name, **labels)
        except AssertionError:
            old = 0.0
        return _metric(text, name, **labels) - old

    assert grew("ecr_gateway_http_requests_total", route="end-3", method="PUT",
                status="201") >= 1
    assert grew("ecr_gateway_http_requests_total", route="end-3", method="GET",
                status="404") >= 1
    assert grew("ecr_gateway_http_request_duration_seconds_count", route="end-5",
                method="PATCH") >= 2
    assert grew("ecr_gateway_http_received_bytes_total", route="end-5") >= len(layer)
    assert grew("ecr_gateway_http_sent_bytes_total", route="end-3") > 0
    assert _metric(text, "ecr_gateway_upload_sessions_active") >= 1
    assert _metric(after_cancel, "ecr_gateway_upload_sessions_active") \
        == _metric(text, "ecr_gateway_upload_sessions_active") - 1
    assert grew("ecr_gateway_upstream_results_total", action="UploadLayerPart",
                outcome="ok") >= 1
    assert grew("ecr_gateway_upstream_results_total", action="ListImages",
                outcome="RepositoryNotFoundException") >= 1
    assert grew("ecr_gateway_upstream_results_total", action="ListImages",
                outcome="ThrottlingException") == 2
    assert grew("ecr_gateway_upstream_throttles_total", action="ListImages") == 2
    assert grew("ecr_gateway_upstream_retries_total", action="ListImages") == 2
    assert grew("ecr_gateway_upstream_call_duration_seconds_count",
                action="CompleteLayerUpload") >= 2
    assert grew("ecr_gateway_token_cache_events_total", event="hit") >= 1


def _raw_request(gateway: GatewayProcess, method: str, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                     .encode())
        return sock.recv(200).split(b"\r\n", 1)[0]


async def test_request_metric_methods_stay_bounded(gateway: GatewayProcess) -> None:
    """Every method a caller sends must not become a label value of its own: WebDAV's (which
    aiohttp's C parser accepts) and the ones the gateway serves are all there is."""
    for method in ("PROPFIND", "MKCOL", "SEARCH", "PURGE", "UNLOCK"):
        status = await asyncio.to_thread(_raw_request, gateway, method, "/v2/")
        assert b" 405 " in status, status
    async with aiohttp.ClientSession() as session:
        text = await _scrape(session, gateway)
    methods = set(re.findall(r'^ecr_gateway_http_requests_total\{[^}]*method="([^"]*)"', text,
                             re.MULTILINE))
    assert "other" in methods
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}


async def test_json_logs_one_line_per_request_and_no_secrets(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    config = {"log_format": "json", "log_level": "debug"}
    name = f"ops/logs-{os.urandom(3).hex()}"
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gateway:
        async with aiohttp.ClientSession() as session:
            oci = OciClient(session, gateway.url)
            await oci.push_image(name, "v1", [os.urandom(3000)])
            headers = {"X-Request-Id": "trace-4711",
                       "Authorization": "Bearer eyJhbGciOiJFUzI1NiJ9.c2VjcmV0LXRva2Vu.c2ln"}
            async with session.get(f"{gateway.url}/v2/{name}/tags/list",
                                   headers=headers) as r:
                assert r.status == 200 and r.headers["X-Request-Id"] == "trace-4711"
            async with session.get(f"{gateway.url}/v2/{name}/blobs/"
                                   f"{digest_of(b'nothing')}", allow_redirects=False) as r:
                assert r.status == 404
        time.sleep(0.3)  # the last lines arrive from the process's stderr
        lines = list(gateway.log_lines)
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger"} <= set(r) for r in records)
    access = [r for r in records if r["logger"] == "gateway.access"]
    traced = [r for r in access if r["request_id"] == "trace-4711"]
    assert len(traced) == 1
    entry = traced[0]
    assert entry["route"] == "end-8a" and entry["repository"] == name
    assert entry["status"] == 200 and entry["bytes_out"] > 0 and entry["duration_ms"] >= 0
    assert entry["upstream_calls"] >= 1 and "ListImages" in entry["upstream_actions"]
    patches = [r for r in access if r["method"] == "PATCH" or r["method"] == "PUT"]
    assert any(r["bytes_in"] == 3000 for r in patches), patches
    text = "\n".join(lines)
    assert SECRET not in text
    assert "c2VjcmV0LXRva2Vu" not in text and "X-Amz-Signature=" not in text


async def test_readyz_follows_the_upstream_and_the_state_store(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    config = {"state": {"backend": "redis", "redis_url": redis.url}}
    try:
        with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gateway:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{gateway.url}/readyz") as r:
                    assert r.status == 200, await r.text()
                redis.stop()
                async with session.get(f"{gateway.url}/readyz") as r:
                    assert r.status == 503 and r.headers["Retry-After"] == "1"
                    body = await r.json()
                # Which step failed, not its details: anyone may ask /readyz, and the
                # error names the state store's address (that goes to the log).
                assert body == {"status": "unavailable",
                                "reason": "the upload session store is unavailable"}
                async with session.get(f"{gateway.url}/healthz") as r:
                    assert r.status == 200  # alive all the same: no restart for this
                redis.start()  # same port: the gateway reconnects by itself
                deadline = time.monotonic() + 15
                while True:
                    async with session.get(f"{gateway.url}/readyz") as r:
                        if r.status == 200:
                            break
                    assert time.monotonic() < deadline, "readyz did not recover"
                    await asyncio.sleep(0.2)
    finally:
        redis.stop()
    bad: dict[str, Any] = {}
    _deny_all(upstream, "AKIDUNKNOWN")
    with GatewayProcess(tmp_path / "gw2", bad, upstream_url=upstream.url,
                        env=upstream.upstream_env("AKIDUNKNOWN")) as gateway:
        async with aiohttp.ClientSession() as session:
            # The log says why (IAM's words). Asked again a few times: the emulator shared by
            # the whole run may have answered one attempt with its rate limit instead.
            for _ in range(5):
                async with session.get(f"{gateway.url}/readyz") as r:
                    assert r.status == 503
                    assert (await r.json())["reason"] == "no ECR authorization token"
                if await gateway.logged("not authorized", 1.0):
                    break
        reasons = [line for line in gateway.log_lines if "not ready" in line]
        assert any("not authorized" in line for line in gateway.log_lines), reasons
        # the step and the whole of IAM's answer, none of it masked as if it were a secret
        assert any("not ready (no ECR authorization token): " in line and "***" not in line
                   for line in reasons), reasons


def _deny_all(emulator: EmulatorProcess, key: str) -> None:
    emulator.control("PUT", "policies", {key: [{"Effect": "Deny", "Action": "*"}]})


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


async def _slow_patch(session: aiohttp.ClientSession, url: str, data: bytes,
                      started: asyncio.Event, pause: float) -> aiohttp.ClientResponse:
    async def body() -> AsyncIterator[bytes]:
        half = len(data) // 2
        yield data[:half]
        started.set()
        await asyncio.sleep(pause)
        yield data[half:]

    headers = {"Content-Type": "application/octet-stream",
               "Content-Range": f"0-{len(data) - 1}", "Content-Length": str(len(data))}
    async with session.patch(url, data=body(), headers=headers) as r:
        await r.read()
        return r


@pytest.mark.parametrize("grace", [10.0, 1.0], ids=["finishes-in-grace", "grace-runs-out"])
async def test_sigterm_drains_in_flight_uploads_and_sessions_stay_resumable(
        upstream: EmulatorProcess, tmp_path: Path, grace: float) -> None:
    """SIGTERM while a slow PATCH streams: the gateway stops accepting at once; with enough
    grace the PATCH completes (202); when the grace runs out first the request is cut, and
    either way the upload resumes after a restart from the offset the gateway recorded."""
    name = f"ops/drain-{os.urandom(3).hex()}"
    data = os.urandom(3 * MiB)
    config: dict[str, Any] = {"shutdown_grace_seconds": grace}
    gateway = GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url).start()
    try:
        async with aiohttp.ClientSession() as session:
            location = await OciClient(session, gateway.url).start(name)
            started = asyncio.Event()
            pause = 3.0
            patch = asyncio.create_task(_slow_patch(session, gateway.url + location, data,
                                                    started, pause))
            await started.wait()
            await asyncio.sleep(0.3)
            assert gateway.process is not None
            signalled = time.monotonic()
            gateway.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            assert _refused(gateway.port)  # no new connections while draining
            if grace > pause:
                response = await patch
                assert response.status == 202
                assert response.headers["Range"] == f"0-{len(data) - 1}"
            else:
                with pytest.raises(aiohttp.ClientError):
                    await patch
            code = await asyncio.to_thread(gateway.process.wait, 30)
            took = time.monotonic() - signalled
            assert code == 0
            assert took < grace + 5
            gateway.start()  # same port, same data dir: the local session store reloads
            async with session.get(gateway.url + location) as r:
                assert r.status == 204
                offset = int(r.headers["Range"].split("-")[1]) + 1
            if grace > pause:
                assert offset == len(data)
            else:
                assert 0 < offset <= len(data) // 2 + 1  # what arrived before the cut
            if offset < len(data):
                async with session.patch(gateway.url + location, data=data[offset:], headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{len(data) - 1}"}) as r:
                    assert r.status == 202, await r.text()
            async with session.put(f"{gateway.url}{location}&digest={digest_of(data)}"
                                   if "?" in location else
                                   f"{gateway.url}{location}?digest={digest_of(data)}") as r:
                assert r.status == 201, await r.text()
    finally:
        gateway.stop()
    logged = [line for line in gateway.log_lines if "shutting down" in line]
    assert logged and f"up to {grace}s" in logged[0]
