"""What an anonymous client can put into the gateway's text log lines: nothing that passes
for another line or for more fields of its own. A path's newline or escape sequence stays
escaped in the access line; an ``X-Request-Id`` is kept (echoed, logged) only when it looks
like one, since it ends every other line logged for the request (``request_id=…``)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.support.gateway import GatewayProcess


def _send(gateway: GatewayProcess, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(head + b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def _request_id(answer: bytes) -> str:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-request-id":
            return value.strip().decode()
    raise AssertionError(answer)


def test_a_client_cannot_forge_text_log_lines_or_fields(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "gw", {"log_format": "text", "log_level": "debug"})
    forged = [b"x request_id=forged user=admin", b'x" forged="1', b"x\tforged"]
    with gateway:
        for path in (b"/v2/a%0a2026-01-01%2000:00:00,000%20CRITICAL%20gateway%20forged/manifests/x",
                     b"/v2/x/manifests/%1B[2Jforged"):
            _send(gateway, b"GET " + path + b" HTTP/1.1\r\n")
        ids = [_request_id(_send(gateway, b"GET /v2/nosuch-repo/manifests/v1 HTTP/1.1\r\n"
                                 b"X-Request-Id: " + value + b"\r\n")) for value in forged]
        kept = _request_id(_send(gateway, b"GET /v2/nosuch-repo/manifests/v1 HTTP/1.1\r\n"
                                 b"X-Request-Id: trace-4711.a_b:c\r\n"))
    time.sleep(0.3)
    assert kept == "trace-4711.a_b:c"
    for given, answered in zip(forged, ids, strict=True):
        assert answered != given.decode() and "forged" not in answered, answered
    assert not [line for line in gateway.log_lines if "\x1b" in line]
    forging = [line for line in gateway.log_lines
               if "forged" in line and " gateway.access " not in line]
    assert not forging, forging
    # The ECR lookups of the refused ids were logged with the gateway's own ids.
    looked_up = [line for line in gateway.log_lines if "nosuch-repo" in line
                 and " gateway.access " not in line]
    assert any(f"request_id={answered}" in line for line in looked_up for answered in ids)


def test_a_refused_request_head_is_not_quoted_back_or_logged(tmp_path: Path) -> None:
    """aiohttp's parser quotes the bytes it refuses; an overlong header's value comes without
    the header's name, which log redaction keys on, and the 400 echoed them all."""
    token = "FwoGZXIvYXdzEPrivateSessionToken"
    heads = [b"X-Amz-Security-Token: " + token.encode() * 300,
             b"Authorization: Basic " + token.encode() * 300,
             b"X-Amz-Security-Token: " + token.encode() + b"\x01",
             b"X-Registry-Auth " + token.encode()]
    gateway = GatewayProcess(tmp_path / "gw", {"log_format": "text"})
    with gateway:
        answers = [_send(gateway, b"GET /v2/ HTTP/1.1\r\n" + head + b"\r\n") for head in heads]
        line_too_long = _send(gateway, b"GET /v2/?X-Amz-Signature=" + token.encode() * 300
                              + b" HTTP/1.1\r\n")
    time.sleep(0.3)
    for answer in [*answers, line_too_long]:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ", 2)[1] == b"400", answer[:300]
        assert b'"UNSUPPORTED"' in body and token[:12].encode() not in body, body
    assert not [line for line in gateway.log_lines if token[:12] in line], gateway.log_lines
    assert len([line for line in gateway.log_lines if "malformed request from" in line]) == 5
