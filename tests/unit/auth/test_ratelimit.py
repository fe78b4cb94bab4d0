"""Failed logins are limited per user and per address, over a sliding window."""

from __future__ import annotations

from gateway.auth.ratelimit import FailedLogins


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_user_limit_then_window_expiry() -> None:
    clock = Clock()
    limits = FailedLogins(60, per_user=3, per_address=100, clock=clock)
    for _ in range(3):
        assert limits.retry_after("alice", "10.0.0.1") is None
        limits.failed("alice", "10.0.0.1")
    wait = limits.retry_after("alice", "10.0.0.9")  # from any address
    assert wait is not None and 0 < wait <= 60
    assert limits.retry_after("bob", "10.0.0.1") is None  # other users are not affected
    clock.now += 61
    assert limits.retry_after("alice", "10.0.0.1") is None


def test_address_limit_across_user_names() -> None:
    limits = FailedLogins(60, per_user=100, per_address=5, clock=Clock())
    for i in range(5):
        limits.failed(f"user{i}", "10.0.0.7")
    assert limits.retry_after("someone-new", "10.0.0.7") is not None
    assert limits.retry_after("someone-new", "10.0.0.8") is None


def test_success_clears_the_user_count() -> None:
    limits = FailedLogins(60, per_user=2, per_address=100, clock=Clock())
    limits.failed("alice", "a")
    limits.succeeded("alice", "a")
    limits.failed("alice", "a")
    assert limits.retry_after("alice", "a") is None


def test_the_owner_logging_in_elsewhere_does_not_clear_a_guesser_s_failures() -> None:
    """The attacker guesses from one address while the owner, elsewhere, logs in between
    (a client that sends Basic credentials on every request): the count holds."""
    limits = FailedLogins(60, per_user=3, per_address=100, clock=Clock())
    for _ in range(3):
        limits.failed("admin", "attacker")
        limits.succeeded("admin", "owner")
    assert limits.retry_after("admin", "attacker") is not None
    limits.succeeded("admin", "attacker")  # the guess that succeeded clears its own
    assert limits.retry_after("admin", "attacker") is None


def test_old_keys_are_forgotten() -> None:
    clock = Clock()
    limits = FailedLogins(10, per_user=1, per_address=1, clock=clock, max_keys=4)
    for i in range(4):
        limits.failed(f"u{i}", f"a{i}")
    clock.now += 11
    limits.failed("x", "y")  # past max_keys: expired entries are dropped
    assert len(limits._failures) == 2


def test_strangers_cannot_lock_the_owner_out_where_they_logged_in() -> None:
    """A user name is no secret: failures from other addresses lock it for strangers, not at
    an address its owner logged in from (a node sending Basic credentials on every pull)."""
    clock = Clock()
    limits = FailedLogins(60, per_user=3, per_address=100, clock=clock)
    limits.succeeded("node", "10.0.0.5")
    for _ in range(3):
        limits.failed("node", "attacker")
    assert limits.retry_after("node", "attacker") is not None
    assert limits.retry_after("node", "10.0.0.9") is not None  # a new address: locked
    assert limits.retry_after("node", "10.0.0.5") is None
    for _ in range(3):  # guessing from the owner's address counts there
        limits.failed("node", "10.0.0.5")
    assert limits.retry_after("node", "10.0.0.5") is not None
    clock.now += 61
    limits.succeeded("node", "10.0.0.5")
    clock.now += 86400 + 1  # an address not logged in from for a day is a stranger's again
    for _ in range(3):
        limits.failed("node", "attacker")
    assert limits.retry_after("node", "10.0.0.5") is not None


def test_an_ipv6_client_counts_by_its_64() -> None:
    """One host holds a whole /64: fresh addresses from it are no fresh limits, nor new keys."""
    limits = FailedLogins(60, per_user=100, per_address=3, clock=Clock())
    for i in range(3):
        assert limits.retry_after(f"user{i}", f"2001:db8:0:7::{i + 1:x}") is None
        limits.failed(f"user{i}", f"2001:db8:0:7::{i + 1:x}")
    assert limits.retry_after("someone", "2001:db8:0:7:ffff::9") is not None
    assert limits.retry_after("someone", "2001:db8:0:8::1") is None  # another /64
    assert limits.retry_after("someone", "::ffff:192.0.2.1") is None
    assert len(limits._failures) == 4  # three user names and one /64


def test_a_long_name_is_limited_by_its_digest() -> None:
    """A name longer than any real one is kept as its digest: still limited, and only it."""
    limits = FailedLogins(60, per_user=2, per_address=100, clock=Clock())
    name = "n" * 100_000
    for address in ("10.0.0.1", "10.0.0.2"):
        limits.failed(name, address)
    assert limits.retry_after(name, "10.0.0.3") is not None
    assert limits.retry_after(name[:-1], "10.0.0.3") is None
    limits.succeeded(name, "10.0.0.1")  # forgets that address's failure of the same name
    assert limits.retry_after(name, "10.0.0.3") is None
