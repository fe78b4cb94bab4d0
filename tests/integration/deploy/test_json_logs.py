"""``log_format: json``: every line the gateway process writes, on stdout and stderr, parses
as one JSON object: the ready line, request logs, Python and library warnings, and the lines
of its embedded emulator."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import aiohttp

from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient


async def test_every_line_is_json_with_the_embedded_emulator(tmp_path: Path) -> None:
    config = {"log_format": "json", "log_level": "debug"}
    name = f"logs/json-{os.urandom(3).hex()}"
    # Development mode turns on Python's own warnings (ResourceWarning, asyncio debug).
    gateway = GatewayProcess(tmp_path / "gw", config, env={"PYTHONDEVMODE": "1"})
    with gateway:
        async with aiohttp.ClientSession() as session:
            oci = OciClient(session, gateway.url)
            await oci.push_image(name, "v1", [os.urandom(3000)])
            async with session.get(f"{gateway.url}/v2/{name}/manifests/v1") as r:
                assert r.status == 200
        # Garbage on the wire: aiohttp's own complaint must be JSON as well.
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
            sock.recv(4096)
    time.sleep(0.3)  # the last lines arrive from the process's pipes
    lines = [line for line in gateway.stdout_lines + gateway.log_lines if line.strip()]
    bad = []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            bad.append(line)
    assert not bad, "not JSON:\n" + "\n".join(bad[:20])
    assert all(isinstance(r, dict) and {"ts", "level", "logger"} <= set(r) for r in records)
    ready = json.loads(gateway.stdout_lines[0])
    assert ready["message"].startswith("ecr-gateway listening on ")
    assert ready["url"] == gateway.url
    loggers = {r["logger"] for r in records}
    assert any(name.startswith("emulator") for name in loggers), loggers
    assert "gateway.access" in loggers
