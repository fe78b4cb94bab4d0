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


async def test_a_client_cannot_break_its_access_line(tmp_path: Path) -> None:
    """The redaction of secrets runs over the JSON line: a path (or ``?ns=``) naming a
    ``secret=`` followed by a quote must not have the quote's escape masked, which ended the
    string there and left the line unparseable (the caller's request out of any JSON-reading
    audit)."""
    gateway = GatewayProcess(tmp_path / "gw", {"log_format": "json"})
    paths = ['/v2/public/x/manifests/secret=%22,%22user%22:%22admin',
             '/v2/public/x/blobs/password=%5C%22',
             '/v2/public/x/tags/list?ns=token=%22%7D',
             '/v2/secret=%22/secret=%22,%20%22level%22:%20%22secret=%22/blobs/x']
    with gateway:
        for path in paths:
            with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
                             .encode())
                while sock.recv(65536):
                    pass
    time.sleep(0.3)
    access = [line for line in gateway.log_lines if '"gateway.access"' in line]
    assert len(access) == len(paths), gateway.log_lines
    bad = []
    for line in access:
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    assert not bad, "not JSON:\n" + "\n".join(bad)
