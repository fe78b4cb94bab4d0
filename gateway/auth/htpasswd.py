"""Users from an htpasswd file with bcrypt hashes (``htpasswd -B``), re-read when it changes.

Only bcrypt entries (``$2y$``, ``$2b$``, ``$2a$``) are accepted; other lines are skipped
with a warning naming the user. A check for an unknown user still runs one bcrypt round
of the same cost, so response times do not tell which users exist. A successful check is
remembered for a minute (keyed by an HMAC of name and password, never the password), so
clients that send Basic credentials on every request do not pay bcrypt every time.

Checks run on threads of their own, on at most half the cores: a burst of guesses (an
address may have 50 under way) waits there, not in the event loop's default pool, where
every upload's staging and hashing runs and would wait behind each guess. They wait in a
bounded :class:`CheckQueue` (gateway/auth/check_queue.py), owners of an address first.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from gateway.auth.check_queue import CheckQueue, Place

log = logging.getLogger(__name__)

BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")
BCRYPT_MAX_BYTES = 72  # bcrypt reads no further; htpasswd -B truncates the same way
VERIFIED_TTL = 60.0


@dataclass(frozen=True)
class User:
    name: str
    fingerprint: str  # changes when the password does (binds refresh tokens to it)


class HtpasswdFile:
    def __init__(self, path: str | Path, queue: CheckQueue | None = None) -> None:
        self.path = Path(path)
        self._hashes: dict[str, bytes] = {}
        self._version: tuple[int, int, int] | None = None
        self._dummy: bytes = b""
        self._key = secrets.token_bytes(32)
        self._verified: dict[bytes, float] = {}
        self.queue = queue or CheckQueue()
        self.reload()

    def reload(self) -> bool:
        """Re-read the file if it changed since the last read; True if it was re-read.

        A file that cannot be read keeps the users already loaded (and says so in the log).
        """
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            if self._version is not None:
                log.error("htpasswd file %s is unreadable (%s); keeping the users loaded "
                          "before", self.path, exc.strerror)
                self._version = None
            elif not self._hashes:
                log.error("htpasswd file %s is unreadable (%s); nobody can log in",
                          self.path, exc.strerror)
            return False
        version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if version == self._version:
            return False
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.error("cannot read htpasswd file %s: %s", self.path, exc)
            return False
        self._hashes = parse(text, str(self.path))
        self._version = version
        self._verified.clear()
        costs = _costs(self._hashes.values())
        self._dummy = _dummy_hash(costs)
        log.info("loaded %d users from %s", len(self._hashes), self.path)
        if len(set(costs)) > 1:
            log.warning("htpasswd file %s mixes bcrypt costs (%s): a user who does not exist "
                        "is checked at cost %d, so users with cheaper hashes answer faster and "
                        "timing tells who exists; hash every password at one cost "
                        "(htpasswd -B -C %d)", self.path,
                        ", ".join(str(c) for c in sorted(set(costs))), max(costs), max(costs))
        return True

    def users(self) -> list[str]:
        self.reload()
        return sorted(self._hashes)

    def user(self, name: str) -> User | None:
        """The user ``name`` as the file has it now (None once removed)."""
        self.reload()
        stored = self._hashes.get(name)
        if stored is None:
            return None
        return User(name, hashlib.sha256(stored).hexdigest()[:32])

    def remembers(self, name: str, password: str) -> bool:
        """Whether :meth:`verify` would answer without a check (verified within a minute)."""
        self.reload()
        return self._remembered(self._verified_key(name, password), time.monotonic(), name)

    async def verify(self, name: str, password: str, place: Place | None = None) -> User | None:
        """The user, if ``password`` is theirs; checked in ``place`` (else in one taken in
        the queue's lane of unknown pairs, QueueFull when it is full)."""
        self.reload()
        key = self._verified_key(name, password)
        now = time.monotonic()
        hashes = self._hashes
        if self._remembered(key, now, name):
            return self.user(name)
        stored = hashes.get(name)
        candidate = password.encode()[:BCRYPT_MAX_BYTES]
        place = place or self.queue.enter(known=False)
        ok = await place.run(_checkpw, candidate, stored or self._dummy)
        if not ok or stored is None or hashes is not self._hashes:
            return None
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[key] = now + VERIFIED_TTL
        return self.user(name)

    def _verified_key(self, name: str, password: str) -> bytes:
        return hmac.new(self._key, f"{name}\0{password}".encode(), hashlib.sha256).digest()

    def _remembered(self, key: bytes, now: float, name: str) -> bool:
        return self._verified.get(key, 0.0) > now and name in self._hashes


def parse(text: str, source: str = "htpasswd") -> dict[str, bytes]:
    hashes: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not name:
            log.warning("%s line %d is not NAME:HASH; skipped", source, number)
            continue
        if not stored.startswith(BCRYPT_PREFIXES):
            log.warning("%s: user %r has no bcrypt hash (use htpasswd -B); skipped", source,
                        name)
            continue
        hashes[name] = stored.encode()
    return hashes


def _checkpw(password: bytes, stored: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, stored)
    except ValueError:  # a malformed hash
        return False


def _costs(hashes: Iterable[bytes]) -> list[int]:
    """The bcrypt cost of each hash ($2y$<cost>$...)."""
    costs = []
    for stored in hashes:
        try:
            costs.append(int(stored.split(b"$")[2]))
        except (IndexError, ValueError):
            continue
    return costs


def _dummy_hash(costs: list[int]) -> bytes:
    """A hash as costly as the file's costliest, checked when the user does not exist."""
    rounds = min(max(costs, default=5), 16)
    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=max(rounds, 4)))
