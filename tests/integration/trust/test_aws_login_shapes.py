"""``auth.mode: aws``: an anonymous caller sending a "key" that no AWS key can be (a newline
in the key id, non-ASCII, a control character in the session token) gets a failed login.
Such keys cannot be sent to ECR: the failure once counted as an outage of the upstream, so a
few such logins opened its circuit, and every caller's ECR calls were 503 for as long as
they kept coming."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import aiohttp
import pytest

from tests.integration.auth.helpers import basic
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

KEY, SECRET = f"AKIDSHAPES{uuid.uuid4().hex[:8].upper()}", f"secret-{uuid.uuid4().hex}"
# (user, password); {n} keeps each user name under the per-user limit of failed logins
MALFORMED = [
    ("AKID{n}\n2026-01-01 00:00:00,000 CRITICAL gateway forged", "secret"),
    ("AKID{n}\u00e9", "secret"),
    ("AKID{n}", "se cret"),
    ("AKID{n}", "secret:token\r\nX-Injected: 1"),
]


@pytest.fixture(scope="module")
def awsgw(upstream: EmulatorProcess,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    upstream.add_key(KEY, SECRET)
    with GatewayProcess(tmp_path_factory.mktemp("gw"), {"auth": {"mode": "aws"}},
                        upstream_url=upstream.url) as gateway:
        yield gateway


async def test_keys_that_cannot_be_aws_keys_fail_the_login_and_leave_the_upstream_up(
        awsgw: GatewayProcess, session: aiohttp.ClientSession) -> None:
    for n in range(3):
        for shape, password in MALFORMED:
            user = shape.format(n=n)
            async with session.get(f"{awsgw.url}/v2/", headers=basic(user, password)) as r:
                body = await r.json()
                assert r.status == 401, (user, password, r.status, body)
                assert body["errors"][0]["code"] == "UNAUTHORIZED"
            async with session.post(f"{awsgw.url}/token", data={
                    "grant_type": "password", "username": user, "password": password,
                    "service": "ecr-gateway"}) as r:
                assert r.status == 401, (user, password, r.status, await r.text())
    # Someone else, logging in for the first time: ECR is asked, and answers.
    async with session.get(f"{awsgw.url}/v2/", headers=basic(KEY, SECRET)) as r:
        assert r.status == 200, await r.text()
    assert not [line for line in awsgw.log_lines if "forged" in line]
