"""The access keys the emulator accepts, from an AWS shared-credentials file.

The file is the INI format of ``~/.aws/credentials``: one section (profile) per key with
``aws_access_key_id`` and ``aws_secret_access_key``, optionally ``aws_session_token`` (the
key is then temporary: every request must carry that token) and ``expiration`` (an ISO 8601
instant such as ``2026-12-02T18:00:00Z``; later requests get ExpiredTokenException) and
``aws_account_id`` (twelve digits, botocore's name for it: the account the key belongs to,
whose registry its calls address; without it, the emulator's ``--account-id``).

Like IAM, where a new key works moments after it is created and a deleted one is refused
moments after, the file is read again when it changed: at once when a key the emulator does
not know shows up, and otherwise when it was last looked at more than ``RECHECK_SECONDS``
ago, so keys can be added, deleted or given another expiration while the emulator runs.
Secrets are never logged.
"""

from __future__ import annotations

import configparser
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

# Seconds a lookup of a known key goes without looking at the file (one stat): a key taken
# out of it is refused after at most this long, as IAM refuses a deleted key within seconds.
RECHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Credential:
    profile: str
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    expires_at: float | None = None  # epoch seconds; None: never
    account_id: str | None = None  # None: the emulator's own account

    def __repr__(self) -> str:  # keep the secret and the token out of any log line
        return f"Credential(profile={self.profile!r}, access_key_id={self.access_key_id!r})"


def parse(text: str, source: str = "credentials") -> dict[str, Credential]:
    """The keys of a shared-credentials document, by access key id; ValueError if malformed."""
    parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        raise ValueError(f"{source} is not an AWS credentials file: {exc}") from None
    keys: dict[str, Credential] = {}
    for profile in parser.sections():
        section = parser[profile]
        key_id = section.get("aws_access_key_id", "").strip()
        secret = section.get("aws_secret_access_key", "").strip()
        if not key_id or not secret:
            raise ValueError(f"{source}: profile [{profile}] needs aws_access_key_id and "
                             "aws_secret_access_key")
        if key_id in keys:
            raise ValueError(f"{source}: access key {key_id} appears in two profiles")
        token = section.get("aws_session_token", "").strip() or None
        expiration = section.get("expiration", "").strip()
        account = section.get("aws_account_id", "").strip() or None
        if account is not None and not (len(account) == 12 and account.isdigit()):
            raise ValueError(f"{source}: profile [{profile}] has an aws_account_id that is "
                             f"not twelve digits: {account!r}")
        keys[key_id] = Credential(profile, key_id, secret, token,
                                  _instant(expiration, source, profile) if expiration else None,
                                  account)
    if not keys:
        raise ValueError(f"{source} holds no profile with an access key")
    return keys


def _instant(value: str, source: str, profile: str) -> float:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{source}: profile [{profile}] has an expiration that is not an "
                         f"ISO 8601 instant: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class CredentialStore:
    """The accepted keys; ``lookup`` re-reads the file when it changed since it was read,
    looking at once for an unknown key and at most every RECHECK_SECONDS for a known one."""

    def __init__(self, keys: dict[str, Credential], path: Path | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = dict(keys)
        self.path = path
        self._clock = clock
        self._stamp = self._file_stamp()
        self._looked = clock()

    @classmethod
    def from_file(cls, path: Path) -> CredentialStore:
        path = Path(path)
        return cls(parse(path.read_text(), str(path)), path)

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, access_key_id: str) -> Credential | None:
        found = self._keys.get(access_key_id)
        if self.path is None:
            return found
        now = self._clock()
        if found is None or now - self._looked >= RECHECK_SECONDS:
            self._looked = now
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                self._reload()
                found = self._keys.get(access_key_id)
        return found

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _reload(self) -> None:
        assert self.path is not None
        try:
            self._keys = parse(self.path.read_text(), str(self.path))
        except (OSError, ValueError) as exc:
            # A half-written or broken file must not lock everyone out: keep the keys we had.
            log.warning("keeping the previous credentials: %s", exc)
            return
        log.info("credentials reloaded from %s: %d keys", self.path, len(self._keys))
