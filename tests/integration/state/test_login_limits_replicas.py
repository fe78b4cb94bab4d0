"""Failed logins with replicas sharing Redis: each replica counted them in its own memory, so
a guesser whose requests a load balancer spread over two replicas got twice
``auth.rate_limit``. Checks are now counted in Redis as they begin, and the limits hold for
the replicas together (gateway/auth/shared_failures.py), with the same rules as one
replica's: failures from elsewhere do not lock a user out of an address it logged in from.
Addresses come from X-Forwarded-For, from the trusted proxy the loopback peer plays."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway.auth.check_queue import CheckQueue
from gateway.auth.client_keys import DEFAULT_CLIENT_KEYS
from gateway.auth.htpasswd import HtpasswdFile
from gateway.auth.logins import HtpasswdBackend, Logins
from gateway.auth.ratelimit import FailedLogins
from gateway.auth.shared_failures import MAX_KNOWN, Attempt, SharedFailedLogins
from gateway.config import Config
from gateway.oci.errors import OciError
from gateway.state.agreement import LiveReplicas, ReplicaAgreement
from gateway.state.connect import RedisConnection
from tests.integration.auth.helpers import basic, request, write_htpasswd
from tests.integration.state.conftest import redis_state, replica
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer

OWNER = {"X-Forwarded-For": "203.0.113.10"}
ATTACKER = {"X-Forwarded-For": "198.51.100.66"}
NEW_PLACE = {"X-Forwarded-For": "203.0.113.99"}
USERS = {f"user{i}": f"password-{i}" for i in range(8)}


@contextmanager
def _replicas(root: Path, upstream: EmulatorProcess, redis_server: RedisServer,
              rounds: int = 4, waiting: int | None = None,
              **rate_limit: int) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two replicas; ``waiting``: their auth.max_waiting_password_checks."""
    users = write_htpasswd(root / "htpasswd", USERS, rounds=rounds)
    auth: dict[str, Any] = {
        "mode": "htpasswd", "htpasswd_file": str(users), "rate_limit": rate_limit,
        "rules": [{"repository": "**", "users": ["*"], "actions": ["pull"]}],
        "max_waiting_password_checks": waiting}
    state = redis_state(redis_server)
    with replica(root / "a", upstream, state, auth=auth, trusted_proxies=["127.0.0.1/32"]) as a, \
            replica(root / "b", upstream, state, auth=auth,
                    trusted_proxies=["127.0.0.1/32"]) as b:
        yield a, b


@pytest.mark.parametrize("guessed", ["aba", "bbb"])
async def test_a_guesser_spread_over_replicas_meets_one_limit(
        upstream: EmulatorProcess, redis_server: RedisServer, tmp_path: Path,
        guessed: str) -> None:
    """With every guess on b (a load balancer keeping a client on one replica), b's own count
    holds the limit too: the owner's login on a made its address known in Redis, and b asks
    there before refusing it."""
    with _replicas(tmp_path, upstream, redis_server, max_failures_per_user=3,
                   max_failures_per_address=1000) as (a, b):
        owner = basic("user0", USERS["user0"])
        async with aiohttp.ClientSession() as session:
            assert (await request(session, "GET", f"{a.url}/v2/", {**owner, **OWNER})).status \
                == 200
            for attempt, gateway in enumerate({"a": a, "b": b}[name] for name in guessed):
                guess = await request(session, "GET", f"{gateway.url}/v2/",
                                      {**basic("user0", f"guess-{attempt}"), **ATTACKER})
                assert guess.status == 401, attempt
            # Three failures in all: every replica refuses the name from other addresses...
            for gateway in (a, b):
                for place in (ATTACKER, NEW_PLACE):
                    refused = await request(session, "GET", f"{gateway.url}/v2/",
                                            {**owner, **place})
                    assert refused.status == 429, (gateway.url, place)
                    assert int(refused.headers["Retry-After"]) > 1
            # ...but not where its owner logged in, on either replica (the token endpoint too).
            for gateway in (b, a):
                assert (await request(session, "GET", f"{gateway.url}/v2/",
                                      {**owner, **OWNER})).status == 200
            token = f"{b.url}/token?service=ecr-gateway&scope=repository:any/app:pull"
            assert (await request(session, "GET", token, {**owner, **OWNER})).status == 200
    assert "Traceback" not in "\n".join(a.log_lines + b.log_lines)


async def test_an_address_guessing_many_names_over_replicas_meets_one_limit(
        upstream: EmulatorProcess, redis_server: RedisServer, tmp_path: Path) -> None:
    with _replicas(tmp_path, upstream, redis_server, max_failures_per_user=1000,
                   max_failures_per_address=4) as (a, b):
        async with aiohttp.ClientSession() as session:
            statuses = []
            for i in range(8):
                gateway = (a, b)[i % 2]
                answer = await request(session, "GET", f"{gateway.url}/v2/",
                                       {**basic(f"user{i}", "wrong"), **ATTACKER})
                statuses.append(answer.status)
            assert statuses == [401] * 4 + [429] * 4
            # Another address is not held back.
            other = await request(session, "GET", f"{b.url}/v2/",
                                  {**basic("user1", USERS["user1"]), **NEW_PLACE})
            assert other.status == 200


async def test_a_burst_of_guesses_over_replicas_checks_no_more_than_the_limit(
        upstream: EmulatorProcess, redis_server: RedisServer, tmp_path: Path) -> None:
    with _replicas(tmp_path, upstream, redis_server, max_failures_per_user=3,
                   max_failures_per_address=1000) as (a, b):
        async with aiohttp.ClientSession() as session:
            answers = await asyncio.gather(*(
                request(session, "GET", f"{(a, b)[i % 2].url}/v2/",
                        {**basic("user2", f"burst-{i}"), **ATTACKER}) for i in range(24)))
            statuses = sorted(answer.status for answer in answers)
            # Each 401 is a password checked: three in all, whichever replica checked it.
            assert statuses.count(401) <= 3, statuses
            assert set(statuses) <= {401, 429}, statuses


async def test_an_owner_known_on_another_replica_goes_ahead_of_a_flood(
        upstream: EmulatorProcess, redis_server: RedisServer, tmp_path: Path) -> None:
    """b's password checks of unknown name and address pairs wait as many as may (guesses
    from many addresses, cost-12 hashes) when the owner, who logged in on a from its
    address, logs in on b. b's own table does not know the pair: it asks Redis before
    refusing, and the owner goes ahead of the guesses instead of getting 429."""
    with _replicas(tmp_path, upstream, redis_server, rounds=12, waiting=4,
                   max_failures_per_user=10, max_failures_per_address=1000) as (a, b):
        owner = basic("user4", USERS["user4"])
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            assert (await request(session, "GET", f"{a.url}/v2/", {**owner, **OWNER})).status \
                == 200
            statuses: list[int] = []
            sent = iter(range(100_000))

            async def guess_on() -> None:  # each answer is followed by another guess
                while len(statuses) < 2000:
                    n = next(sent)
                    answer = await request(session, "GET", f"{b.url}/v2/", {
                        **basic(f"nobody-{n}", "guess"),
                        "X-Forwarded-For": f"198.51.{n // 250}.{n % 250}"})
                    statuses.append(answer.status)
                    await asyncio.sleep(0.01)

            guessers = [asyncio.ensure_future(guess_on()) for _ in range(10)]
            await asyncio.sleep(0.5)  # the lane is full, and kept full
            started = time.monotonic()
            login = await request(session, "GET", f"{b.url}/v2/", {**owner, **OWNER})
            took = time.monotonic() - started
            for guesser in guessers:
                guesser.cancel()
            await asyncio.gather(*guessers, return_exceptions=True)
    assert login.status == 200, login.body[:300]
    assert statuses.count(429) >= 10, statuses
    assert took < 5, f"the owner waited {took:.1f} s"  # about two checks: 0.6 s


async def test_logins_go_on_under_the_local_limits_while_redis_is_down(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as own_redis, \
            _replicas(tmp_path, upstream, own_redis, max_failures_per_user=3,
                      max_failures_per_address=1000) as (a, _):
        own_redis.stop()
        async with aiohttp.ClientSession() as session:
            owner = await request(session, "GET", f"{a.url}/v2/",
                                  {**basic("user3", USERS["user3"]), **OWNER})
            assert owner.status == 200
            statuses = [(await request(session, "GET", f"{a.url}/v2/",
                                       {**basic("user3", f"down-{i}"), **ATTACKER})).status
                        for i in range(4)]
            assert statuses == [401, 401, 401, 429]  # this replica's own count
    assert "Traceback" not in "\n".join(a.log_lines)


async def test_names_and_addresses_without_end_stop_at_a_bound_in_redis(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """Callers choose the names and addresses counted: a new pair per request would add keys
    to Redis (shared with every push's sessions) as fast as requests come. Past
    ``max_recorded`` checks in a window nothing more is added, each replica's own count
    applying."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    # A window of months: the count of its checks starts again at no boundary mid-test.
    shared = SharedFailedLogins(RedisConnection(redis_server.url), prefix, 1e7, 3, 50,
                                DEFAULT_CLIENT_KEYS, max_recorded=5)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        # Refused checks use none of the room: one address asking again and again for one
        # name does not turn the shared count off for everyone.
        again = [await shared.begin("victim", "192.0.2.7") for _ in range(10)]
        assert [isinstance(a, Attempt) for a in again] == [True] * 3 + [False] * 7
        attempts = [await shared.begin(f"name-{i}", f"2001:db8:{i:x}::1") for i in range(12)]
        assert all(isinstance(attempt, Attempt) for attempt in attempts)
        counted = [a.counted for a in attempts if isinstance(a, Attempt)]
        assert counted == [("user", "address")] * 2 + [()] * 10
        kept = [key async for key in raw.scan_iter(match=f"{prefix}logins:user:*")]
        assert len(kept) == 3  # the victim's and two names'
        # A check that succeeds gives its place back: real users' logins, however many, do
        # not use the room up.
        succeeded = attempts[0]
        assert isinstance(succeeded, Attempt)
        await shared.succeeded(succeeded)
        more = [await shared.begin(f"late-{i}", "2001:db8:ffff::1") for i in range(2)]
        assert [a.counted for a in more if isinstance(a, Attempt)] == [("user", "address"), ()]

        assert "not counted across replicas until the window ends" in caplog.text
    finally:
        await raw.aclose()
        await shared.close()


async def test_the_addresses_a_name_logged_in_from_stay_bounded_in_redis(
        redis_server: RedisServer) -> None:
    """A caller holding one name's password and many IPv6 /64s logs in from each (checks of
    a verified password are quick): each login kept its address for a day, and every login
    past a thousand read them all."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    shared = SharedFailedLogins(RedisConnection(redis_server.url), prefix, 300.0, 3, 50,
                                DEFAULT_CLIENT_KEYS)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        for i in range(MAX_KNOWN + 100):
            attempt = await shared.begin("holder", f"2001:db8:{i // 65536:x}:{i % 65536:x}::1")
            assert isinstance(attempt, Attempt)
            await shared.succeeded(attempt)
        known = [key async for key in raw.scan_iter(match=f"{prefix}logins:known:*")]
        assert len(known) == 1
        assert await raw.hlen(known[0]) <= MAX_KNOWN
        # The latest logins' addresses are the ones kept.
        latest = DEFAULT_CLIENT_KEYS.of(f"2001:db8:0:{MAX_KNOWN + 99:x}::1")
        assert latest is not None and await raw.hexists(known[0], latest)
    finally:
        await raw.aclose()
        await shared.close()


async def test_the_bound_in_redis_holds_across_the_end_of_a_window(
        redis_server: RedisServer) -> None:
    """Checks filling one window's room at its end were still held in Redis (each set lives a
    window past its last check) when the next window's room filled: twice the bound."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    window = 2.0
    shared = SharedFailedLogins(RedisConnection(redis_server.url), prefix, window, 3, 50,
                                DEFAULT_CLIENT_KEYS, max_recorded=20)
    raw = aioredis.Redis.from_url(redis_server.url)
    sent = iter(range(1_000_000))

    async def fill() -> None:
        for _ in range(40):
            i = next(sent)
            await shared.begin(f"name-{i}", f"2001:db8:{i:x}::1")

    try:
        await until_in_window(window, 1.2)
        await fill()  # late in one window
        await until_in_window(window, 0.0, 0.8)
        await fill()  # early in the next
        kept = [key async for key in raw.scan_iter(match=f"{prefix}logins:user:*")]
        assert len(kept) <= 20
    finally:
        await raw.aclose()
        await shared.close()


async def until_in_window(window: float, start: float, end: float | None = None) -> None:
    """Until the time within a window of ``window`` seconds is in [``start``, ``end``)."""
    offset = time.time() % window
    if not start <= offset < (window if end is None else end):
        await asyncio.sleep((start - offset) % window + 0.01)


async def test_logins_that_succeed_give_their_room_in_redis_back(
        redis_server: RedisServer) -> None:
    """A login that succeeds is taken out of Redis as it ends: it held no room, and a busy
    gateway's logins alone no longer stopped the shared count for the rest of the window."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    shared = SharedFailedLogins(RedisConnection(redis_server.url), prefix, 300.0, 3, 50,
                                DEFAULT_CLIENT_KEYS, max_recorded=3)
    try:
        for i in range(10):
            attempt = await shared.begin(f"user-{i}", "192.0.2.8")
            assert isinstance(attempt, Attempt) and attempt.counted == ("user", "address"), i
            await shared.succeeded(attempt)
        guess = await shared.begin("victim", "198.51.100.9")
        assert isinstance(guess, Attempt) and guess.counted == ("user", "address")
    finally:
        await shared.close()


async def test_checks_of_a_name_with_many_known_addresses_stay_quick_in_redis(
        redis_server: RedisServer) -> None:
    """A caller holding one name's password and many IPv6 /64s logs in from each, then fails
    up to the limit from each (there only that address's failures count): the name's set
    held thousands of checks, and every check of the name (each request with Basic
    credentials, logins that succeed included, not rate-limited) read them all in Redis's one
    thread, milliseconds each (13 ms at ten thousand)."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    limit, places = 5, 1000
    shared = SharedFailedLogins(RedisConnection(redis_server.url), prefix, 300.0, limit, 10**6,
                                DEFAULT_CLIENT_KEYS)
    raw = aioredis.Redis.from_url(redis_server.url)

    def place(i: int) -> str:
        return f"2001:db8:{i // 65536:x}:{i % 65536:x}::1"

    async def redis_time() -> tuple[int, int]:
        stats = (await raw.info("commandstats")).get("cmdstat_evalsha", {})
        return int(stats.get("calls", 0)), int(stats.get("usec", 0))

    try:
        for i in range(places + 1):  # the last one fails nothing
            attempt = await shared.begin("holder", place(i))
            assert isinstance(attempt, Attempt)
            await shared.succeeded(attempt)
        for i in range(places):
            for _ in range(limit):
                assert isinstance(await shared.begin("holder", place(i)), Attempt)
        calls, usec = await redis_time()
        for _ in range(20):
            for address in (place(7), "198.51.100.9"):  # its own failures; all of them
                wait = await shared.begin("holder", address)
                assert not isinstance(wait, Attempt) and 290 <= wait <= 300, wait
        # Where it failed nothing it may try; a login that succeeds clears its address.
        attempt = await shared.begin("holder", place(places))
        assert isinstance(attempt, Attempt)
        await shared.succeeded(attempt)
        await shared.succeeded(Attempt("x", "holder", DEFAULT_CLIENT_KEYS.of(place(7)),
                                       ("user",)))
        assert isinstance(await shared.begin("holder", place(7)), Attempt)
        after_calls, after_usec = await redis_time()
        per_call = (after_usec - usec) / (after_calls - calls)
        assert per_call < 250, f"{per_call:.0f} µs of Redis's time per check"
    finally:
        await raw.aclose()
        await shared.close()


async def test_a_check_refused_for_want_of_room_after_redis_counted_it_is_no_failure(
        redis_server: RedisServer, tmp_path: Path) -> None:
    """Credentials remembered when their check was admitted (no place taken) and forgotten
    by the time it ran (the htpasswd file re-read meanwhile) need a place then; with none
    free the login gets 429, counted nowhere: not in Redis either, which had begun counting
    it (a failure of the name there for the whole window)."""
    users = write_htpasswd(tmp_path / "htpasswd", {"owner": "secret"})
    queue = CheckQueue(max_waiting=0, threads=1)
    backend = HtpasswdBackend(HtpasswdFile(users, queue))
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    shared = SharedFailedLogins(RedisConnection(redis_server.url), prefix, 300.0, 3, 50,
                                DEFAULT_CLIENT_KEYS)
    logins = Logins(backend, FailedLogins(300, per_user=10, per_address=50), shared)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await logins.check("owner", "secret", "192.0.2.1") is not None  # remembered
        holder = queue.enter(known=False)  # the one thread taken, no room to wait
        check = asyncio.ensure_future(logins.check("owner", "secret", "192.0.2.1"))
        await asyncio.sleep(0)  # admitted without a place; Redis counting it
        later = time.time() + 5
        os.utime(users, (later, later))  # re-read before the check: forgotten
        with pytest.raises(OciError) as refused:
            await check
        assert refused.value.status == 429 and refused.value.error.code == "TOOMANYREQUESTS"
        holder.leave()
        sets = await raw.keys(f"{prefix}logins:user:*") + \
            await raw.keys(f"{prefix}logins:address:*")
        assert [await raw.zcard(key) for key in sets] == [0] * len(sets)
    finally:
        await raw.aclose()
        await shared.close()


async def _replica_logins(redis_url: str, prefix: str, users: Path, live: LiveReplicas,
                          per_user: int) -> tuple[Logins, SharedFailedLogins]:
    """One replica's login checks, as gateway/auth/setup.py makes them (a small room in
    Redis: two checks a window)."""
    shared = SharedFailedLogins(RedisConnection(redis_url), prefix, 300.0, per_user, 1000,
                                DEFAULT_CLIENT_KEYS, max_recorded=2, live=live)
    backend = HtpasswdBackend(HtpasswdFile(users, CheckQueue(max_waiting=64, threads=1)))
    return Logins(backend, FailedLogins(300, per_user=per_user, per_address=1000),
                  shared), shared


async def _guesses(replicas: list[Logins], tries: int) -> list[str]:
    """``tries`` wrong passwords of "owner", each sent to the next replica in turn."""
    outcomes = []
    for i in range(tries):
        try:
            login = await replicas[i % len(replicas)].check("owner", f"guess-{i}",
                                                            "198.51.100.66")
            outcomes.append("checked" if login is None else "in")
        except OciError as refused:
            outcomes.append(str(refused.status))
    return outcomes


@pytest.mark.parametrize("counting", ["room full", "redis down"])
async def test_replicas_counting_alone_hold_their_part_of_the_limits(
        tmp_path: Path, counting: str) -> None:
    """Past the room in Redis (callers choosing new names and addresses fill it), or with
    Redis down, each replica counted alone with the whole limits: a guesser spread over two
    replicas got twice ``max_failures_per_user`` (8 guesses of a name checked where the limit
    is 4). Each replica now holds its part, the limits divided among the live replicas the
    settings hash lists."""
    users = write_htpasswd(tmp_path / "htpasswd", {"owner": "secret"}, rounds=4)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    with RedisServer(tmp_path / "redis") as own_redis:
        live_a, live_b = LiveReplicas(), LiveReplicas()
        config = Config()
        agreements = [ReplicaAgreement(RedisConnection(own_redis.url), prefix, config,
                                       live=live) for live in (live_a, live_b)]
        a, shared_a = await _replica_logins(own_redis.url, prefix, users, live_a, 4)
        b, shared_b = await _replica_logins(own_redis.url, prefix, users, live_b, 4)
        try:
            for agreement in agreements + agreements:  # each sees the other
                await agreement.check()
            assert (live_a.count, live_b.count) == (2, 2)
            if counting == "room full":
                for i in range(2):  # other names from other addresses fill the room
                    assert await a.check(f"name-{i}", "wrong", f"2001:db8:{i:x}::1") is None
            else:
                own_redis.stop()
            outcomes = await _guesses([a, b], 12)
            assert outcomes.count("checked") <= 4, outcomes
            assert outcomes[-4:] == ["429"] * 4, outcomes
            assert (shared_a.share, shared_b.share) == (2, 2)
        finally:
            for closing in (shared_a, shared_b):
                await closing.close()
            for agreement in agreements:
                await agreement.close()
