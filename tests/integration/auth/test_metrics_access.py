"""``/metrics`` with authentication on: behind any valid login on the main listener, or on
its own ``metrics_listen`` address (and then not on the main one)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.auth.conftest import htpasswd_auth
from tests.integration.auth.helpers import auth_gateway, basic, bearer, request, token_for
from tests.support.clients import free_port
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess


async def test_metrics_need_a_login(authgw: GatewayProcess,
                                    session: aiohttp.ClientSession) -> None:
    url = f"{authgw.url}/metrics"
    anonymous = await request(session, "GET", url)
    assert anonymous.status == 401 and anonymous.code == "UNAUTHORIZED"
    assert b"ecr_gateway_" not in anonymous.body
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    wrong = await request(session, "GET", url, basic("bob", "not-his"))
    assert wrong.status == 401 and b"ecr_gateway_" not in wrong.body
    # An anonymous token is no login either.
    anonymous_token = await token_for(session, authgw.url, [])
    refused = await request(session, "GET", url, bearer(anonymous_token))
    assert refused.status == 401
    for headers in (basic("bob", "bob-pw"),
                    bearer(await token_for(session, authgw.url, [], ("bob", "bob-pw")))):
        answer = await request(session, "GET", url, headers)
        assert answer.status == 200 and b"ecr_gateway_http_requests" in answer.body


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def separate(upstream: EmulatorProcess, htpasswd: Path, metrics_port: int,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with auth_gateway(tmp_path_factory.mktemp("metrics"), upstream, htpasswd_auth(htpasswd),
                      metrics_listen=f"127.0.0.1:{metrics_port}") as gateway:
        yield gateway


async def test_metrics_on_their_own_listener(separate: GatewayProcess, metrics_port: int,
                                             session: aiohttp.ClientSession) -> None:
    await request(session, "GET", f"{separate.url}/v2/")  # something to count
    answer = await request(session, "GET", f"http://127.0.0.1:{metrics_port}/metrics")
    assert answer.status == 200
    assert b"ecr_gateway_http_requests" in answer.body
    assert b"ecr_gateway_upload_sessions_active" in answer.body
    main = await request(session, "GET", f"{separate.url}/metrics", basic("bob", "bob-pw"))
    assert main.status == 404
