"""The /_emulator/ control endpoints refuse malformed input with a 400 and leave the emulator
serving: a rule that cannot be injected, or a body that cannot be parsed, is the caller's
mistake, never a 500 or a call that hangs later."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

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


def test_control_endpoints_refuse_keys_of_another_account(
        shared_emulator: EmulatorProcess) -> None:
    """A key of another account would otherwise deny the emulator's own keys every call,
    inject faults into them and read their request log."""
    other = "AKIDOTHERACCOUNT1"
    secret = shared_emulator.add_key(other, account_id="210987654321")
    rules = json.dumps({shared_emulator.access_key_id: [{"Effect": "Deny", "Action": "*"}]})
    for method, path, data in (("PUT", "policies", rules.encode()), ("GET", "requests", b""),
                               ("POST", "faults", b'{"error": "ServerException"}'),
                               ("POST", "lifecycle/run", b"")):
        url = f"{shared_emulator.url}/_emulator/{path}"
        signed = AWSRequest(method=method, url=url, data=data)
        SigV4Auth(Credentials(other, secret), "emulator",
                  shared_emulator.region).add_auth(signed)
        request = urllib.request.Request(url, data=data or None, method=method,
                                         headers=dict(signed.headers.items()))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403, path
        assert json.load(refused.value)["__type"] == "AccessDeniedException"
    assert shared_emulator.control("GET", "policies")["policies"] == {}
    assert shared_emulator.control("GET", "faults")["faults"] == []
