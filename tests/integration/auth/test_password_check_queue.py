"""A flood of password guesses from many addresses, each under its own limits, against
cost-12 hashes (a quarter of a second a check, on one thread where the machine has two
CPUs). The checks waited in the thread pool's queue without bound: every guess sent was
checked in turn, and an owner's login waited behind all of them. Now at most
``auth.max_waiting_password_checks`` of them wait; the rest are refused at once with 429,
and an owner logging in from an address where it logged in before goes ahead of them.
Addresses come from X-Forwarded-For, from the trusted proxy the loopback peer plays."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.auth.helpers import Answer, auth_gateway, basic, request, write_htpasswd
from tests.support.clients import free_port
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

WAITING = 24  # auth.max_waiting_password_checks
THREADS = max(1, (os.cpu_count() or 2) // 2)  # the gateway's, on this machine
OWNER = {"X-Forwarded-For": "203.0.113.10"}
TOKEN = "/token?service=ecr-gateway&scope=repository:team-a/app:pull"


class Flooded:
    def __init__(self, gateway: GatewayProcess, users: Path, metrics: str) -> None:
        self.gateway = gateway
        self.users = users
        self.metrics = metrics


@pytest.fixture(scope="module")
def flooded(upstream: EmulatorProcess,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flooded]:
    folder = tmp_path_factory.mktemp("check-queue")
    users = write_htpasswd(folder / "htpasswd", {"alice": "alice-pw"}, rounds=12)
    port = free_port()
    auth = {"mode": "htpasswd", "htpasswd_file": str(users),
            "rules": [{"repository": "**", "users": ["*"], "actions": ["pull"]}],
            "max_waiting_password_checks": WAITING}
    with auth_gateway(folder / "gw", upstream, auth, trusted_proxies=["127.0.0.1/32"],
                      metrics_listen=f"127.0.0.1:{port}") as gateway:
        yield Flooded(gateway, users, f"http://127.0.0.1:{port}/metrics")


async def _timed(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                 started: float) -> tuple[Answer, float]:
    answer = await request(session, "GET", url, headers)
    return answer, time.monotonic() - started


def _flood(session: aiohttp.ClientSession, gateway: GatewayProcess, tag: str,
           count: int) -> asyncio.Future[list[tuple[Answer, float]]]:
    """``count`` guesses at once, of as many names, two from each address: each far under
    the per-name and per-address limits."""
    started = time.monotonic()
    return asyncio.gather(*(_timed(session, f"{gateway.url}/v2/", {
        **basic(f"{tag}-{i}", "guess"), "X-Forwarded-For": f"198.51.{i // 200}.{i // 2 % 100}"},
        started) for i in range(count)))


async def _refusals(session: aiohttp.ClientSession, flooded: Flooded) -> float:
    answer = await request(session, "GET", flooded.metrics)
    match = re.search(rb'^ecr_gateway_password_check_refusals_total\{lane="unknown"\} (\S+)$',
                      answer.body, re.MULTILINE)
    return float(match[1]) if match else 0.0


async def test_a_flood_past_the_bound_is_refused_at_once(flooded: Flooded) -> None:
    """100 guesses from 50 addresses: each was checked, a quarter of a second each on one
    thread, so the last waited 27 s and the queue held them all. Past the bound they get
    429 with a short Retry-After at once, and only the bound's checks (and those running)
    are run."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        before = await _refusals(session, flooded)
        answers = await _flood(session, flooded.gateway, "flood", 100)
        refused_count = await _refusals(session, flooded)
    checked = [seconds for answer, seconds in answers if answer.status == 401]
    refused = [(answer, seconds) for answer, seconds in answers if answer.status == 429]
    print(f"{len(checked)} checked in {max(checked):.1f} s, {len(refused)} refused within "
          f"{max((s for _, s in refused), default=0):.2f} s", file=sys.stderr)
    assert len(checked) + len(refused) == 100, {a.status for a, _ in answers}
    # The checks run: those waiting and running, and a few more whose place was freed while
    # the flood was still arriving.
    assert WAITING <= len(checked) <= WAITING + THREADS + 8, len(checked)
    for answer, _ in refused:
        assert answer.code == "TOOMANYREQUESTS"
        assert 1 <= int(answer.headers["Retry-After"]) <= 10
    assert max(seconds for _, seconds in refused) < max(checked) / 3
    assert refused_count - before == len(refused)
    said = [line for line in flooded.gateway.log_lines if "logins refused" in line]
    assert len(said) == 1 and "max_waiting_password_checks" in said[0]
    assert "flood-" not in said[0] and "198.51." not in said[0]


async def test_an_owner_logs_in_during_a_flood_without_waiting_for_it(
        flooded: Flooded) -> None:
    """The owner logged in from its address before; its password was changed since (so no
    check remembered from that login answers for it). A flood of guesses from other
    addresses is waiting when it logs in again: it waited behind every one of them, as long
    as the flood took (16 s at cost 12 for 60 guesses); now it goes ahead of them, within
    about two checks."""
    gateway = flooded.gateway
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        first = await request(session, "GET", f"{gateway.url}{TOKEN}",
                              {**basic("alice", "alice-pw"), **OWNER})
        assert first.status == 200
        replacement = write_htpasswd(flooded.users.with_suffix(".new"), {"alice": "new-pw"},
                                     rounds=12)
        os.replace(replacement, flooded.users)

        flood = _flood(session, gateway, "owner-flood", 60)
        await asyncio.sleep(0.5)  # the guesses wait
        started = time.monotonic()
        login = await request(session, "GET", f"{gateway.url}{TOKEN}",
                              {**basic("alice", "new-pw"), **OWNER})
        owner = time.monotonic() - started
        answers = await flood
    flooded_for = max(seconds for answer, seconds in answers if answer.status == 401)
    print(f"the owner logged in in {owner:.2f} s, the flood's checks took {flooded_for:.1f} s",
          file=sys.stderr)
    assert login.status == 200, login.body[:300]
    assert owner < flooded_for / 4, \
        f"the owner's login took {owner:.1f} s of the flood's {flooded_for:.1f} s"
