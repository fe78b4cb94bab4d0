"""Logins under concurrency: a burst of guesses sent at once is held to the failed-login
limit (checks under way count), while the same right credentials sent at once (parallel
pushes of one CI job) share one check and are never refused."""

from __future__ import annotations

import asyncio

from gateway.auth.check_queue import Place
from gateway.auth.logins import Login, Logins
from gateway.auth.ratelimit import FailedLogins
from gateway.auth.tokens import RefreshClaims
from gateway.oci.errors import OciError

PASSWORD = "the right one"


class SlowBackend:
    """A password check that takes until ``release`` is set (bcrypt, or an AWS call)."""

    offers_refresh_tokens = False

    def __init__(self) -> None:
        self.checked = 0
        self.release = asyncio.Event()

    def admit(self, user: str, password: str, known: bool) -> Place | None:
        return None

    async def check(self, user: str, password: str,
                    place: Place | None = None) -> Login | None:
        self.checked += 1
        await self.release.wait()
        return Login(user) if password == PASSWORD else None

    def still_valid(self, claims: RefreshClaims) -> Login | None:
        return None

    def still_holds(self, subject: str, fingerprint: str | None) -> bool:
        return True


async def _burst(logins: Logins, backend: SlowBackend,
                 passwords: list[str]) -> list[Login | BaseException | None]:
    asked = [asyncio.ensure_future(logins.check("victim", password, "10.0.0.1"))
             for password in passwords]
    await asyncio.sleep(0.05)  # every request has reached its check or its refusal
    backend.release.set()
    return await asyncio.gather(*asked, return_exceptions=True)


async def test_a_burst_of_guesses_is_held_to_the_limit() -> None:
    backend = SlowBackend()
    logins = Logins(backend, FailedLogins(300, per_user=10, per_address=50))
    answers = await _burst(logins, backend, [f"guess {i}" for i in range(99)] + [PASSWORD])
    refused = [a for a in answers if isinstance(a, OciError)]
    assert backend.checked == 10
    assert len(refused) == 90
    assert all(a.status == 429 and "Retry-After" in a.headers for a in refused)
    assert not any(isinstance(a, Login) for a in answers)  # the right one came too late


async def test_the_same_credentials_at_once_share_one_check() -> None:
    backend = SlowBackend()
    logins = Logins(backend, FailedLogins(300, per_user=10, per_address=50))
    answers = await _burst(logins, backend, [PASSWORD] * 64)
    assert backend.checked == 1
    assert answers == [Login("victim")] * 64


def test_the_table_of_failures_stays_within_its_bound() -> None:
    limits = FailedLogins(300, per_user=10, per_address=50, max_keys=1000)
    for index in range(2000):
        limits.failed(f"stranger{index}", f"10.{index // 50 % 256}.{index // 12800}.1")
        if index % 100 == 0:
            limits.failed("victim", "192.0.2.1")  # a guesser keeps failing meanwhile
    assert len(limits._failures) <= 1000
    assert limits.retry_after("victim", "192.0.2.9") is not None  # still counted
