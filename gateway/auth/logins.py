"""Checking a user name and password: against the htpasswd file or the AWS upstream.

Both kinds answer with a :class:`Login` (who, and for AWS which in-memory identity) or None.
Failed attempts are counted per user and per address; past the limit the attempt is
refused with 429 before any password is checked.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Protocol

from gateway.auth.aws import AwsIdentities
from gateway.auth.challenge import too_many_failures
from gateway.auth.htpasswd import HtpasswdFile
from gateway.auth.ratelimit import FailedLogins
from gateway.auth.shared_failures import Attempt, SharedFailedLogins
from gateway.auth.tokens import RefreshClaims


@dataclass(frozen=True)
class Login:
    subject: str
    identity: str | None = None  # aws: the handle of the caller's keys
    fingerprint: str | None = None  # htpasswd: changes with the password


class PasswordBackend(Protocol):
    offers_refresh_tokens: bool

    async def check(self, user: str, password: str) -> Login | None: ...

    def still_valid(self, claims: RefreshClaims) -> Login | None: ...

    def still_holds(self, subject: str, fingerprint: str | None) -> bool: ...


class HtpasswdBackend:
    offers_refresh_tokens = True

    def __init__(self, users: HtpasswdFile) -> None:
        self.users = users

    async def check(self, user: str, password: str) -> Login | None:
        found = await self.users.verify(user, password)
        return Login(found.name, fingerprint=found.fingerprint) if found else None

    def still_valid(self, claims: RefreshClaims) -> Login | None:
        found = self.users.user(claims.subject)
        if found is None or found.fingerprint != claims.fingerprint:
            return None
        return Login(found.name, fingerprint=found.fingerprint)

    def still_holds(self, subject: str, fingerprint: str | None) -> bool:
        """Whether an access token issued to ``subject`` still speaks for them (they were
        not removed and their password did not change since)."""
        return fingerprint is not None and \
            self.still_valid(RefreshClaims(subject, fingerprint)) is not None


class AwsBackend:
    """Refresh tokens are never offered: they would have to carry the secret key."""

    offers_refresh_tokens = False

    def __init__(self, identities: AwsIdentities) -> None:
        self.identities = identities

    async def check(self, user: str, password: str) -> Login | None:
        handle = await self.identities.login(user, password)
        return Login(user, identity=handle) if handle else None

    def still_valid(self, claims: RefreshClaims) -> Login | None:
        return None

    def still_holds(self, subject: str, fingerprint: str | None) -> bool:
        return True  # the token's identity handle is checked instead (AwsIdentities)


class Logins:
    def __init__(self, backend: PasswordBackend, failures: FailedLogins,
                 shared: SharedFailedLogins | None = None) -> None:
        self.backend = backend
        self.failures = failures
        self.shared = shared  # the replicas' counts in Redis, checked too
        # Checks under way, by a keyed hash of the name and password: the same credentials
        # sent at once (a CI job's parallel pushes) share one check, and count as one
        # attempt, where distinct guesses each count (FailedLogins.attempt).
        self._key = secrets.token_bytes(32)
        self._checks: dict[bytes, asyncio.Future[Login | None]] = {}

    async def check(self, user: str, password: str, address: str | None) -> Login | None:
        """The login, or None for a wrong name or password; 429 once rate-limited."""
        wait = self.failures.retry_after(user, address)
        if wait is not None and address is not None and self.shared is not None \
                and await self.shared.known(user, address):
            # The guesses this replica checked may all have been the name's: where its owner
            # logged in on another replica only that address's own failures count.
            self.failures.known(user, address)
            wait = self.failures.retry_after(user, address)
        if wait is not None:
            raise too_many_failures(wait)
        login = await self._shared_check(user, password, address) if user and password \
            else None
        if login is None:
            self.failures.failed(user, address)
        else:
            self.failures.succeeded(user, address)
        return login

    async def _shared_check(self, user: str, password: str,
                            address: str | None) -> Login | None:
        key = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        check = self._checks.get(key)
        if check is None:
            # Counted from now, before the next request is looked at, until it ends.
            end = self.failures.attempt(user, address)
            check = asyncio.ensure_future(self._counted_check(user, password, address))
            self._checks[key] = check

            def done(task: asyncio.Future[Login | None]) -> None:
                end()
                self._checks.pop(key, None)
                if not task.cancelled():
                    task.exception()  # retrieved: no warning when every asker went away

            check.add_done_callback(done)
        # Shielded: a client that goes away does not cancel the others' check.
        return await asyncio.shield(check)

    async def _counted_check(self, user: str, password: str,
                             address: str | None) -> Login | None:
        """The backend's check, counted first in the replicas' failures (429 past them)."""
        if self.shared is None:
            return await self.backend.check(user, password)
        attempt = await self.shared.begin(user, address)
        if not isinstance(attempt, Attempt):
            raise too_many_failures(attempt)
        login = await self.backend.check(user, password)
        if login is not None:
            await self.shared.succeeded(attempt)
        return login


def parse_basic(value: str) -> tuple[str, str] | None:
    """``user:password`` from a Basic credential; None if malformed."""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None
