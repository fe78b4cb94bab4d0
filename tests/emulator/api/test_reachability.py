"""Who reaches the emulator and what they get: a web page in a browser on this host gets
nothing from an emulator open on loopback (no credentials, any key accepted), by pointing a
name of its own at 127.0.0.1 (DNS rebinding) nor by a cross-site request; health tells
nobody whose registry this is; and connections that send heads slowly, never finish them, or
pile up are cut, so memory and file descriptors stay bounded."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from ecr_emulator.connections import MAX_HEADERS
from tests.support.emulator import EmulatorProcess

TARGET = "AmazonEC2ContainerRegistry_V20150921."


@pytest.fixture(scope="module")
def open_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with EmulatorProcess(tmp_path_factory.mktemp("open"), credentials=False,
                         args=["--local-host-name", "ecr.test"],
                         env={"ECR_EMULATOR_HEADER_TIMEOUT": "2",
                              "ECR_EMULATOR_MAX_CONNECTIONS": "20"}) as emu:
        yield emu


async def _call(url: str, host: str | None, action: str, params: dict[str, object],
                extra: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    """An ECR call signed with a made-up key, as a web page's JavaScript can sign it."""
    body = json.dumps(params).encode()
    headers = {"X-Amz-Target": TARGET + action, "Content-Type": "application/x-amz-json-1.1"}
    if host is not None:
        headers["Host"] = host
    request = AWSRequest("POST", url + "/", data=body, headers=headers)
    SigV4Auth(Credentials("AKIDPAGE", "made-up"), "ecr", "us-east-1").add_auth(request)
    async with aiohttp.ClientSession() as session, session.post(
            url + "/", data=body, headers={**dict(request.headers), **(extra or {})}) as r:
        return r.status, json.loads(await r.read())


async def _get(url: str, host: str | None = None, **headers: str) -> tuple[int, str]:
    if host is not None:
        headers["Host"] = host
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
        return r.status, await r.text()


async def test_a_rebound_name_gets_nothing(open_emulator: EmulatorProcess) -> None:
    url, port = open_emulator.url, open_emulator.url.rsplit(":", 1)[1]
    for host in (f"attacker.example:{port}", "Attacker.Example.", "127.0.0.1.attacker.example",
                 "localhost.evil"):
        status, answer = await _call(url, host, "CreateRepository",
                                     {"repositoryName": "page/made"})
        assert (status, answer["__type"]) == (403, "AccessDeniedException"), (host, answer)
        status, _ = await _get(f"{url}/_emulator/requests", host)  # --admin is on
        assert status == 403, host
    status, answer = await _call(url, None, "DescribeRepositories",
                                 {"repositoryNames": ["page/made"]})
    assert answer["__type"] == "RepositoryNotFoundException"  # nothing was made


async def test_a_web_page_request_gets_nothing(open_emulator: EmulatorProcess) -> None:
    for marks in ({"Origin": "https://attacker.example"}, {"Origin": "null"},
                  {"Sec-Fetch-Site": "cross-site"}):
        status, answer = await _call(open_emulator.url, None, "CreateRepository",
                                     {"repositoryName": "page/posted"}, marks)
        assert status == 403 and "web pages" in str(answer["message"]), marks


async def test_clients_naming_this_host_go_on(open_emulator: EmulatorProcess) -> None:
    port = open_emulator.url.rsplit(":", 1)[1]
    for index, host in enumerate((None, f"localhost:{port}", "LOCALHOST", "ecr.test",
                                  f"ECR.test.:{port}", f"ecr.localhost:{port}")):
        status, answer = await _call(open_emulator.url, host, "CreateRepository",
                                     {"repositoryName": f"named/{index}"})
        assert status == 200, (host, answer)


async def test_with_credentials_any_name_that_signs_goes_on(tmp_path: Path) -> None:
    # a page has no secret to sign with: names a client was configured with keep working
    with EmulatorProcess(tmp_path / "ecr") as emu:
        body = b'{"repositoryName": "signed/by-name"}'
        request = AWSRequest("POST", emu.url + "/", data=body, headers={
            "Host": "ecr.internal.example", "X-Amz-Target": TARGET + "CreateRepository",
            "Content-Type": "application/x-amz-json-1.1"})
        SigV4Auth(Credentials(emu.access_key_id, emu.secret_access_key), "ecr",
                  "us-east-1").add_auth(request)
        async with aiohttp.ClientSession() as session, session.post(
                emu.url + "/", data=body, headers=dict(request.headers)) as r:
            assert r.status == 200, await r.text()


async def test_health_does_not_tell_the_account(open_emulator: EmulatorProcess) -> None:
    status, text = await _get(f"{open_emulator.url}/_emulator/health")
    assert status == 200 and json.loads(text) == {"status": "ok"}
    assert open_emulator.account_id not in text


async def _connect(emulator: EmulatorProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", int(emulator.url.rsplit(":", 1)[1]))


async def test_a_head_that_never_ends_is_cut(open_emulator: EmulatorProcess) -> None:
    reader, writer = await _connect(open_emulator)
    writer.write(b"GET /_emulator/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n")
    started = time.monotonic()
    try:
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, nothing answered
    finally:
        writer.close()
    assert time.monotonic() - started < 6  # header_timeout 2 s (aiohttp rounds timers up)


async def test_an_oversized_head_is_refused(open_emulator: EmulatorProcess) -> None:
    reader, writer = await _connect(open_emulator)
    # One field past MAX_HEADERS, each of 8 KiB: aiohttp's defaults accept 32,768 such
    # fields (a head of 120 held ~1.9 MiB). The head is complete and nothing follows it, so
    # the emulator has read every byte sent when it answers: bytes still unread when it
    # closes would make the kernel reset the connection, and the answer could be lost.
    writer.write(b"GET /_emulator/health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(
        b"X-%03d: " % i + b"a" * 8000 + b"\r\n" for i in range(MAX_HEADERS)) + b"\r\n")
    try:
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request"), answer[:80]


async def test_connections_past_the_cap_are_turned_away(
        open_emulator: EmulatorProcess) -> None:
    held = [await _connect(open_emulator) for _ in range(20)]
    try:
        await asyncio.sleep(0.2)
        reader, writer = await _connect(open_emulator)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer[:80]
        assert b"ServiceUnavailableException" in answer
    finally:
        for _, idle in held:
            idle.close()
    await asyncio.sleep(3)  # their handlers end
    status, _ = await _get(f"{open_emulator.url}/_emulator/health")
    assert status == 200
