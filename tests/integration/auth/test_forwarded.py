"""Headers a client can forge do not move the token realm or the login rate limiter: Host is
believed only when allowed, X-Forwarded-* only from trusted proxies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.auth.conftest import htpasswd_auth
from tests.integration.auth.helpers import auth_gateway, basic, parse_challenge, request
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

FORGED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example",
          "X-Forwarded-For": "198.51.100.9"}


def _gateway(tmp: Path, upstream: EmulatorProcess, htpasswd: Path,
             trusted: list[str]) -> GatewayProcess:
    auth = htpasswd_auth(htpasswd, token={"realm_hosts": ["gw.example.com:5000"]},
                         rate_limit={"max_failures_per_user": 1000,
                                     "max_failures_per_address": 3})
    # Its rules let anyone pull public/*, and a trusted proxy may publish it.
    auth["allow_anonymous_on_public_address"] = True
    # Served under that name too (on loopback with anonymous pulls, a name must be listed to
    # be served at all), but it is no realm host: the realm must not follow it.
    auth["local_host_names"] = ["evil.example"]
    return auth_gateway(tmp, upstream, auth, trusted_proxies=trusted)


@pytest.fixture(scope="module")
def direct(upstream: EmulatorProcess, htpasswd: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Clients reach it directly: the loopback peer is no trusted proxy."""
    with _gateway(tmp_path_factory.mktemp("direct"), upstream, htpasswd,
                  ["10.0.0.0/8"]) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def proxied(upstream: EmulatorProcess, htpasswd: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Behind a trusted proxy (the loopback peer plays it)."""
    with _gateway(tmp_path_factory.mktemp("proxied"), upstream, htpasswd,
                  ["127.0.0.1/32"]) as gateway:
        yield gateway


async def realm(gateway: GatewayProcess, headers: dict[str, str]) -> str:
    async with aiohttp.ClientSession() as session:
        answer = await request(session, "GET", f"{gateway.url}/v2/", headers)
    assert answer.status == 401
    return parse_challenge(answer.headers["WWW-Authenticate"])["realm"]


async def test_forged_host_and_forwarded_headers_do_not_move_the_realm(
        direct: GatewayProcess) -> None:
    own = f"http://127.0.0.1:{direct.port}/token"
    assert await realm(direct, {"Host": "evil.example"}) == own
    assert await realm(direct, {"Host": "evil.example:5000", **FORGED}) == own
    assert await realm(direct, {**FORGED}) == own
    # A host in auth.token.realm_hosts is believed (plain http: no trusted proxy said https).
    assert await realm(direct, {"Host": "gw.example.com:5000", **FORGED}) == \
        "http://gw.example.com:5000/token"


async def test_trusted_proxy_moves_the_realm(proxied: GatewayProcess) -> None:
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gw.example.com:5000"}
    assert await realm(proxied, headers) == "https://gw.example.com:5000/token"
    # Even a trusted proxy's host must be one of realm_hosts when they are configured.
    assert await realm(proxied, {**FORGED}) == f"https://127.0.0.1:{proxied.port}/token"


async def _fail_login(gateway: GatewayProcess, user: str, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session:
        answer = await request(session, "GET", f"{gateway.url}/v2/",
                               {**basic(user, "wrong"), **headers})
    return answer.status


async def test_rate_limit_ignores_forwarded_for_from_an_untrusted_peer(
        direct: GatewayProcess) -> None:
    for i in range(3):  # every attempt claims another address: all count against the peer
        assert await _fail_login(direct, f"u{i}", {"X-Forwarded-For": f"198.51.100.{i}"}) == 401
    assert await _fail_login(direct, "u9", {"X-Forwarded-For": "198.51.100.77"}) == 429


async def test_rate_limit_keys_on_the_client_behind_a_trusted_proxy(
        proxied: GatewayProcess) -> None:
    # The proxy appends the address it saw; what the client wrote to the left is ignored.
    for i in range(3):
        assert await _fail_login(proxied, f"p{i}",
                                 {"X-Forwarded-For": f"6.6.6.{i}, 203.0.113.5"}) == 401
    assert await _fail_login(proxied, "p9", {"X-Forwarded-For": "203.0.113.5"}) == 429
    # Another client behind the same proxy is not locked out.
    assert await _fail_login(proxied, "p9", {"X-Forwarded-For": "203.0.113.6"}) == 401
