"""The login rate limiter against an attacker who knows a user's name: failures sent from
elsewhere lock that name for every other address, but not where its owner logs in from.
Addresses come from X-Forwarded-For, from the trusted proxy the loopback peer plays."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.integration.auth.conftest import PASSWORDS, htpasswd_auth
from tests.integration.auth.helpers import auth_gateway, basic, request
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

OWNER = {"X-Forwarded-For": "203.0.113.10"}
ATTACKER = {"X-Forwarded-For": "198.51.100.66"}
NEW_PLACE = {"X-Forwarded-For": "203.0.113.99"}


@contextmanager
def _limited_gateway(upstream: EmulatorProcess, htpasswd: Path, folder: Path,
                     **limits: int) -> Iterator[GatewayProcess]:
    """A gateway with ``limits`` for its login rate limiter, behind the loopback proxy."""
    # Its rules let anyone pull public/*, and a trusted proxy may publish it.
    auth = htpasswd_auth(htpasswd, rate_limit=limits, allow_anonymous_on_public_address=True)
    with auth_gateway(folder, upstream, auth, trusted_proxies=["127.0.0.1/32"]) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def limited(upstream: EmulatorProcess, htpasswd: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with _limited_gateway(upstream, htpasswd, tmp_path_factory.mktemp("limited"),
                          max_failures_per_user=3, max_failures_per_address=1000) as gateway:
        yield gateway


async def test_an_attacker_knowing_the_user_name_cannot_lock_its_owner_out(
        limited: GatewayProcess, session: aiohttp.ClientSession) -> None:
    owner = basic("viewer", PASSWORDS["viewer"])
    ping = f"{limited.url}/v2/"
    assert (await request(session, "GET", ping, {**owner, **OWNER})).status == 200
    for attempt in range(3):
        guess = await request(session, "GET", ping, {**basic("viewer", f"guess-{attempt}"),
                                                     **ATTACKER})
        assert guess.status == 401
    # The attacker, and anyone the owner never logged in from, are locked out...
    for place in (ATTACKER, NEW_PLACE):
        assert (await request(session, "GET", ping, {**owner, **place})).status == 429
    # ...the owner where it logs in is not: Basic on each request and the token endpoint.
    assert (await request(session, "GET", ping, {**owner, **OWNER})).status == 200
    token = f"{limited.url}/token?service=ecr-gateway&scope=repository:team-a/app:pull"
    assert (await request(session, "GET", token, {**owner, **OWNER})).status == 200
    assert (await request(session, "GET", token, {**owner, **NEW_PLACE})).status == 429
    # Guesses from the owner's address still count there.
    for attempt in range(3):
        guess = await request(session, "GET", ping, {**basic("viewer", f"near-{attempt}"),
                                                     **OWNER})
        assert guess.status == 401
    assert (await request(session, "GET", ping, {**owner, **OWNER})).status == 429


@pytest.fixture(scope="module")
def per_address(upstream: EmulatorProcess, htpasswd: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with _limited_gateway(upstream, htpasswd, tmp_path_factory.mktemp("per-address"),
                          max_failures_per_user=1000, max_failures_per_address=3) as gateway:
        yield gateway


async def test_fresh_ipv6_addresses_of_one_64_are_no_fresh_limits(
        per_address: GatewayProcess, session: aiohttp.ClientSession) -> None:
    """max_failures_per_address holds for a /64 as for one address: a client handed a /64
    cannot go on guessing, and growing the limiter's table, with each new address of it."""
    async def guess(user: str, address: str) -> int:
        headers = {**basic(user, "wrong"), "X-Forwarded-For": address}
        return (await request(session, "GET", f"{per_address.url}/v2/", headers)).status

    assert [await guess(f"name{i}", f"2001:db8:5:6::{i}") for i in range(1, 4)] == [401] * 3
    assert await guess("name-next", "2001:db8:5:6:abcd::1") == 429
    assert await guess("name-next", "2001:db8:5:7::1") == 401  # another /64
