"""ECR's error messages name the account (registry id) and ARNs; a registry client gets the
message without them, while the gateway's log keeps the whole text for operators."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp

from tests.integration.auth.helpers import request
from tests.support.gateway import GatewayProcess

ACCOUNT = re.compile(r"(?<![0-9])[0-9]{12}(?![0-9])")


async def test_repository_not_found_loses_the_account_id(gateway: GatewayProcess,
                                                         repo: str) -> None:
    async with aiohttp.ClientSession() as session:
        answer = await request(session, "GET", f"{gateway.url}/v2/{repo}/tags/list")
    assert answer.status == 404 and answer.code == "NAME_UNKNOWN"
    text = answer.body.decode()
    assert repo in text  # the message still says what was not found
    assert not ACCOUNT.search(text), text
    assert "arn:aws" not in text
    # The log is read from the process's stderr by a thread: give the line a moment.
    deadline = time.monotonic() + 5
    while True:
        logged = [line for line in gateway.log_lines if "RepositoryNotFoundException" in line
                  and repo in line]
        if logged or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert logged and ACCOUNT.search(logged[-1]), gateway.log_lines[-5:]
