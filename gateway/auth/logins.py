"""Checking a user name and password: against the htpasswd file or the AWS upstream.

Both kinds answer with a :class:`Login` (who, and for AWS which in-memory identity) or None.
Failed attempts are counted per user and per address; past the limit the attempt is
refused with 429 before any password is checked. An htpasswd check first takes a place
among those waiting for a thread (gateway/auth/check_queue.py), in the lane of the pairs
that logged in where the name logged in from that address: a full lane is a 429 too, and
nothing is counted for it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Protocol

from gateway.auth.aws import AwsIdentities
from gateway.auth.challenge import too_many_checks, too_many_failures
from gateway.auth.check_queue import Place, QueueFull
from gateway.auth.htpasswd import HtpasswdFile
from gateway.auth.ratelimit import FailedLogins, user_key
from gateway.auth.shared_failures import Attempt, SharedFailedLogins
from gateway.auth.tokens import RefreshClaims
from gateway.observability.logs import Sparing, unsaid
from gateway.observability.metrics import PASSWORD_CHECK_REFUSALS
from gateway.oci.errors import OciError

log = logging.getLogger(__name__)
_FULL = Sparing()  # a full lane is said once a minute (the metric counts every refusal)


@dataclass(frozen=True)
class Login:
    subject: str
    identity: str | None = None  # aws: the handle of the caller's keys
    fingerprint: str | None = None  # htpasswd: changes with the password


class PasswordBackend(Protocol):
    offers_refresh_tokens: bool

    def admit(self, user: str, password: str, known: bool) -> Place | None:
        """The check's place among those waiting for a thread, in the known pairs' lane or
        the others'; None when it needs none. QueueFull when that lane is full."""
        ...

    async def check(self, user: str, password: str,
                    place: Place | None = None) -> Login | None: ...

    def still_valid(self, claims: RefreshClaims) -> Login | None: ...

    def still_holds(self, subject: str, fingerprint: str | None) -> bool: ...


class HtpasswdBackend:
    offers_refresh_tokens = True

    def __init__(self, users: HtpasswdFile) -> None:
        self.users = users

    def admit(self, user: str, password: str, known: bool) -> Place | None:
        if self.users.remembers(user, password):
            return None
        return self.users.queue.enter(known, user_key(user))

    async def check(self, user: str, password: str,
                    place: Place | None = None) -> Login | None:
        found = await self.users.verify(user, password, place)
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

    def admit(self, user: str, password: str, known: bool) -> Place | None:
        return None  # an ECR call, not a CPU's work: nothing waits for a thread

    async def check(self, user: str, password: str,
                    place: Place | None = None) -> Login | None:
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
        # attempt, where distinct guesses each count (FailedLogins.attempt); with the
        # place each holds among the checks waiting for a thread.
        self._key = secrets.token_bytes(32)
        self._checks: dict[bytes, tuple[asyncio.Future[Login | None], Place | None]] = {}

    async def check(self, user: str, password: str, address: str | None) -> Login | None:
        """The login, or None for a wrong name or password; 429 once rate-limited."""
        # While Redis does not count (down, or its room full), this replica holds its part of
        # the limits: counting alone, each of N replicas would let the limits through.
        share = self.shared.share if self.shared is not None else 1
        wait = self.failures.retry_after(user, address, share)
        if wait is not None and address is not None and self.shared is not None \
                and await self.shared.known(user, address):
            # The guesses this replica checked may all have been the name's: where its owner
            # logged in on another replica only that address's own failures count.
            self.failures.known(user, address)
            wait = self.failures.retry_after(user, address, share)
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
        if key not in self._checks:
            place = await self._admit(user, password, address)
            if key not in self._checks:
                self._begin(key, user, password, address, place)
            elif place is not None:  # begun by another request while Redis was asked
                place.leave()
        elif address is not None and self.failures.is_known(user, address):
            place = self._checks[key][1]
            if place is not None:  # the owner's credentials: ahead of strangers' guesses
                place.promote()
        # Shielded: a client that goes away does not cancel the others' check.
        return await asyncio.shield(self._checks[key][0])

    def _begin(self, key: bytes, user: str, password: str, address: str | None,
               place: Place | None) -> None:
        # Counted from now, before the next request is looked at, until it ends.
        end = self.failures.attempt(user, address)
        check = asyncio.ensure_future(self._counted_check(user, password, address, place))
        self._checks[key] = (check, place)

        def done(task: asyncio.Future[Login | None]) -> None:
            end()
            if place is not None:
                place.leave()  # not run: remembered meanwhile, or refused by Redis
            self._checks.pop(key, None)
            if not task.cancelled():
                task.exception()  # retrieved: no warning when every asker went away

        check.add_done_callback(done)

    async def _admit(self, user: str, password: str, address: str | None) -> Place | None:
        """A place for the check among those waiting for a thread (None: it needs none), in
        the known pairs' lane where ``user`` logged in from ``address``; 429 when full."""
        known = address is not None and self.failures.is_known(user, address)
        try:
            return self.backend.admit(user, password, known)
        except QueueFull as full:
            refusal = full
        # Redis is asked only now (no round trip while there is room): the name may have
        # logged in from this address on another replica.
        if not known and address is not None and self.shared is not None \
                and await self.shared.known(user, address):
            self.failures.known(user, address)
            try:
                return self.backend.admit(user, password, True)
            except QueueFull as full:
                refusal = full
        raise _refused(refusal)

    async def _counted_check(self, user: str, password: str, address: str | None,
                             place: Place | None) -> Login | None:
        """The backend's check, counted first in the replicas' failures (429 past them)."""
        shared, attempt = self.shared, None
        if shared is not None:
            begun = await shared.begin(user, address)
            if not isinstance(begun, Attempt):
                raise too_many_failures(begun)
            attempt = begun
        try:
            login = await self.backend.check(user, password, place)
        except QueueFull as full:  # remembered when admitted, forgotten since (a reload)
            if shared is not None and attempt is not None:
                await shared.forget(attempt)  # never checked: no failure in Redis either
            raise _refused(full) from None
        if shared is not None and attempt is not None and login is not None:
            await shared.succeeded(attempt)
        return login


def _refused(full: QueueFull) -> OciError:
    """The 429 of a check its lane has no room for: counted, and said once a minute (with
    no name or address: the flood's are the callers' to choose)."""
    PASSWORD_CHECK_REFUSALS.labels(full.lane).inc()
    left = _FULL.due(full.lane)
    if left is not None:
        log.warning("logins refused with 429: %d password checks of %s (name, address) "
                    "pairs wait already, for %d password-check threads "
                    "(auth.max_waiting_password_checks)%s", full.room, full.lane,
                    full.threads, unsaid(left))
    return too_many_checks(full.retry_after)


def parse_basic(value: str) -> tuple[str, str] | None:
    """``user:password`` from a Basic credential; None if malformed."""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None
