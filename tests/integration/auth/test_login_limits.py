"""The login rate limiter against an attacker who knows a user's name: failures sent from
elsewhere lock that name for every other address, but not where its owner logs in from;
against one who sends names of a megabyte, which the limiter must not keep whole; and
against one whose guesses, each a bcrypt check, would hold up everyone else's work.
Addresses come from X-Forwarded-For, from the trusted proxy the loopback peer plays."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.integration.auth.conftest import PASSWORDS, htpasswd_auth
from tests.integration.auth.helpers import auth_gateway, basic, request, write_htpasswd
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient

OWNER = {"X-Forwarded-For": "203.0.113.10"}
ATTACKER = {"X-Forwarded-For": "198.51.100.66"}
NEW_PLACE = {"X-Forwarded-For": "203.0.113.99"}


@contextmanager
def _limited_gateway(upstream: EmulatorProcess, htpasswd: Path, folder: Path,
                     **limits: int) -> Iterator[GatewayProcess]:
    """A gateway with ``limits`` for its login rate limiter, behind the loopback proxy, with
    an operator's NAT64 prefix (a /96 of the local-use 64:ff9b:1::/48) besides the
    well-known one."""
    # Its rules let anyone pull public/*, and a trusted proxy may publish it.
    auth = htpasswd_auth(htpasswd, rate_limit=limits, allow_anonymous_on_public_address=True)
    keys = {"nat64_prefixes": ["64:ff9b::/96", "64:ff9b:1:2::/96"]}
    with auth_gateway(folder, upstream, auth, trusted_proxies=["127.0.0.1/32"],
                      limits={"client_key": keys}) as gateway:
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


async def test_ipv4_clients_behind_an_operator_nat64_prefix_fail_apart(
        per_address: GatewayProcess, session: aiohttp.ClientSession) -> None:
    """Every IPv4 client of a translator with its own prefix arrives in one /64: counted by
    it, one client's failures locked all the others out. Each counts by its IPv4 address."""
    async def guess(user: str, address: str) -> int:
        headers = {**basic(user, "wrong"), "X-Forwarded-For": address}
        return (await request(session, "GET", f"{per_address.url}/v2/", headers)).status

    guesser = "64:ff9b:1:2::c633:6442"  # 198.51.100.66
    assert [await guess(f"nsp{i}", guesser) for i in range(3)] == [401] * 3
    assert await guess("nsp-next", guesser) == 429
    assert await guess("nsp-next", "198.51.100.66") == 429  # the same client, untranslated
    assert await guess("nsp-next", "64:ff9b:1:2::cb00:7163") == 401  # 203.0.113.99


def _rss(gateway: GatewayProcess) -> int:
    assert gateway.process is not None
    status = Path(f"/proc/{gateway.process.pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match[1]) * 1024


async def test_failed_logins_with_huge_user_names_keep_no_memory(
        limited: GatewayProcess, session: aiohttp.ClientSession) -> None:
    """A caller without an account sends token-form logins whose user names fill the form's
    megabyte. Each failure is counted against its name until the limiter's table is full
    (100,000 names): kept whole, 150 of them held 140 MB, and an address at the default
    limit (50 per 5 minutes) adds half a gigabyte an hour."""
    before = _rss(limited)
    statuses = set()
    for i in range(150):
        form = {"grant_type": "password", "username": f"n{i}-" + "x" * 950_000,
                "password": "guess"}
        async with session.post(f"{limited.url}/token", data=form,
                                headers={"X-Forwarded-For": "198.51.100.77"}) as r:
            await r.read()
            statuses.add(r.status)
    assert statuses == {401}
    grown = _rss(limited) - before
    assert grown < 40 * 1024 * 1024, f"the gateway kept {grown / 2**20:.0f} MiB"


async def test_guesses_do_not_hold_up_logged_in_users(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """One address without an account sends the 50 guesses its limit lets through at once,
    against a file of cost-11 hashes. They ran in the event loop's default thread pool,
    where uploads stage and hash their bytes: a logged-in user's five small pushes took 5
    to 7 s instead of 0.15 s (13.7 s at cost 12), ending only once the guesses queued before
    them were checked. The guesses wait on threads of their own, so the pushes end long
    before the guesses do. Both are timed from the same start, so a slow or busy machine
    moves both (beside two busy CPUs, the pushes took 2.5 s)."""
    users = write_htpasswd(tmp_path / "htpasswd", {"alice": PASSWORDS["alice"]}, rounds=11)
    with _limited_gateway(upstream, users, tmp_path / "gw") as gateway:
        owner = {**basic("alice", PASSWORDS["alice"]), "X-Forwarded-For": "203.0.113.10"}
        async with aiohttp.ClientSession(headers=owner) as session:
            alice = OciClient(session, gateway.url)
            await alice.push_blob("team-a/guessed", os.urandom(1000))  # logged in

            async with aiohttp.ClientSession() as stranger:
                guesses = asyncio.gather(*(request(stranger, "GET", f"{gateway.url}/v2/", {
                    **basic(f"nobody-{i}", "guess"), "X-Forwarded-For": "198.51.100.9"})
                    for i in range(50)))
                await asyncio.sleep(0.1)  # all under way
                started = time.monotonic()
                for _ in range(5):
                    await alice.push_blob("team-a/guessed", os.urandom(300_000))
                pushed = time.monotonic() - started
                assert {answer.status for answer in await guesses} == {401}
                guessed = time.monotonic() - started
    print(f"five pushes in {pushed:.2f} s, the guesses in {guessed:.2f} s", file=sys.stderr)
    assert pushed < guessed / 3, \
        f"five pushes took {pushed:.1f} s of the {guessed:.1f} s the guesses were checked in"
