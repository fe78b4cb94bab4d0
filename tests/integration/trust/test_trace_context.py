"""A client's ``traceparent`` does not steer the gateway's traces: from an address that is not
a trusted proxy it is only a link from a new trace, so a client cannot hide its requests from
traces (``-00`` under the default parent-based sampler), have them exported under a ratio
sampler (``-01``), or put the gateway's spans into a trace of its choosing. From a trusted
proxy (a traced service in front) it is the parent, as OpenTelemetry propagation means."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.otlp import OtlpReceiver


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


def _gateway(folder: Path, upstream: EmulatorProcess, receiver: OtlpReceiver,
             config: dict[str, Any], sampler: str) -> GatewayProcess:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
           **({"OTEL_TRACES_SAMPLER": sampler, "OTEL_TRACES_SAMPLER_ARG": "0.0"}
              if sampler else {})}
    return GatewayProcess(folder, config, upstream_url=upstream.url, env=env)


async def _get(gateway: GatewayProcess, traceparent: str) -> str:
    request_id = secrets.token_hex(8)
    async with aiohttp.ClientSession() as session, session.get(
            f"{gateway.url}/v2/", headers={"traceparent": traceparent,
                                           "X-Request-Id": request_id}) as r:
        assert r.status == 200
    return request_id


def _span_of(receiver: OtlpReceiver, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for span in receiver.spans:
            if span["attributes"].get("ecr_gateway.request_id") == request_id:
                return span
        time.sleep(0.1)
    raise AssertionError(f"no span exported for request {request_id}")


def _context() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


async def test_an_untrusted_callers_trace_context_is_only_a_link(
        tmp_path: Path, upstream: EmulatorProcess, receiver: OtlpReceiver) -> None:
    trace_id, span_id = _context()
    with _gateway(tmp_path / "gw", upstream, receiver, {}, "") as gateway:
        # "-00": under the default sampler (parent-based) the old gateway exported nothing
        request_id = await _get(gateway, f"00-{trace_id}-{span_id}-00")
        span = _span_of(receiver, request_id)
    assert span["trace"] != trace_id and span["parent"] == "", span
    assert span["links"] == [(trace_id, span_id)], span


async def test_an_untrusted_caller_cannot_force_its_requests_into_export(
        tmp_path: Path, upstream: EmulatorProcess, receiver: OtlpReceiver) -> None:
    trace_id, span_id = _context()
    with _gateway(tmp_path / "gw", upstream, receiver, {},
                  "parentbased_traceidratio") as gateway:
        request_id = await _get(gateway, f"00-{trace_id}-{span_id}-01")
        time.sleep(1.5)  # several export rounds
    assert not [s for s in receiver.spans
                if s["attributes"].get("ecr_gateway.request_id") == request_id]


async def test_a_trusted_proxys_trace_context_is_the_parent(
        tmp_path: Path, upstream: EmulatorProcess, receiver: OtlpReceiver) -> None:
    trace_id, span_id = _context()
    config = {"trusted_proxies": ["127.0.0.1"],
              "auth": {"allow_anonymous_on_public_address": True}}
    with _gateway(tmp_path / "gw", upstream, receiver, config, "") as gateway:
        request_id = await _get(gateway, f"00-{trace_id}-{span_id}-01")
        span = _span_of(receiver, request_id)
    assert span["trace"] == trace_id and span["parent"] == span_id, span
