"""An anonymous client learns nothing of where the gateway's ECR endpoint is (a VPC endpoint,
an internal proxy, the embedded emulator's port) from the 503 of an upstream outage: the
circuit breaker's answer once named its host and port. The operator's log names it, once
per outage."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import aiohttp

from tests.support.gateway import GatewayProcess


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_an_outage_answer_does_not_name_the_upstream(tmp_path: Path) -> None:
    port = _closed_port()
    gateway = GatewayProcess(tmp_path / "gw", {"upstream": {"retry_budget_seconds": 1.0}},
                             upstream_url=f"http://127.0.0.1:{port}")
    bodies = []
    with gateway:
        async with aiohttp.ClientSession() as session:
            for _ in range(4):
                async with session.get(f"{gateway.url}/v2/outage/app/tags/list") as r:
                    assert r.status == 503 and r.headers.get("Retry-After")
                    bodies.append(await r.text())
        time.sleep(0.3)
    assert any("circuit open" in body for body in bodies), bodies
    assert not [body for body in bodies if str(port) in body], bodies
    opened = [line for line in gateway.log_lines if "unreachable after" in line]
    assert len(opened) == 1 and f"127.0.0.1:{port}" in opened[0], gateway.log_lines
