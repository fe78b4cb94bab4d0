"""The /_emulator/ control endpoints refuse malformed input with a 400 and leave the emulator
serving: a rule that cannot be injected, or a body that cannot be parsed, is the caller's
mistake, never a 500 or a call that hangs later."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.support.emulator import EmulatorProcess, ecr_client

DEEP = b"[" * 100_000 + b"]" * 100_000


def send(emulator: EmulatorProcess, method: str, path: str, data: bytes) -> tuple[int, Any]:
    url = f"{emulator.url}/_emulator/{path}"
    request = urllib.request.Request(url, data=data, method=method,
                                     headers=emulator.admin_headers(method, url, data))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("rule", [
    b'{"error": "X", "status": 0}',  # no HTTP status line
    b'{"error": "X", "status": 99}',
    b'{"error": "X", "status": 1000}',
    b'{"error": "X", "status": 200}',  # an "error" botocore takes for a success
    b'{"error": "X", "status": "abc"}',
    b'{"error": "X", "count": 0}',
    b'{"error": "X", "count": 1.5}',
    b'{"latency": NaN}',  # passed the range check, then every call slept for ever
    b'{"rate": NaN, "error": "X"}',
    DEEP,  # json.loads recursed into a RecursionError: a 500
])
async def test_malformed_fault_rules_are_refused(shared_emulator: EmulatorProcess,
                                                 rule: bytes) -> None:
    shared_emulator.clear_faults()
    status, body = send(shared_emulator, "POST", "faults", rule)
    assert status == 400, body
    assert "error" in json.loads(body)
    assert shared_emulator.control("GET", "faults")["faults"] == []
    async with ecr_client(shared_emulator.url, retries={"total_max_attempts": 1},
                          read_timeout=5) as ecr:
        await ecr.describe_repositories()


async def test_error_statuses_are_kept(shared_emulator: EmulatorProcess) -> None:
    shared_emulator.clear_faults()
    shared_emulator.inject_fault("DescribeRepositories", "ServiceUnavailableException",
                                 status=503)
    async with ecr_client(shared_emulator.url, retries={"total_max_attempts": 1}) as ecr:
        with pytest.raises(Exception) as failed:
            await ecr.describe_repositories()
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503  # type: ignore


def test_deeply_nested_policies_are_refused(shared_emulator: EmulatorProcess) -> None:
    status, body = send(shared_emulator, "PUT", "policies", DEEP)
    assert status == 400, body
    assert shared_emulator.control("GET", "policies")["policies"] == {}
