"""``auth.mode: aws``: the caller's own AWS keys are the login.

Username = access key id, password = secret access key, or ``secret:session-token`` for
temporary credentials. The keys are checked once with GetAuthorizationToken against the
upstream; the answer is cached (``gateway.ecr.tokens.TokenCache``: one call however many
requests arrive at once, renewed ahead of ``expiresAt`` while the identity is in use) and
the caller's ECR calls are then made with the caller's keys, so IAM decides what each one
may do. An identity is known by a handle (an HMAC of its keys under a per-process secret):
it is what tokens carry, and nothing else. The keys live only in this process's memory
and leave it only as SigV4 signatures; an identity unused past its token's expiry is
forgotten together with its ECR client.

It fails closed: keys are only kept (and their ECR client only stays open) once
GetAuthorizationToken succeeded with them. Any refusal by the upstream (an unknown key, a
wrong secret, an expired or forged session token: every 4xx but throttling) is a failed
login, which the login rate limiter counts; only outages and throttling raise. The known
identities are bounded in number (:data:`MAX_IDENTITIES`) and in time (a TTLCache), and
their registry tokens with them: the token cache holds as many as there are identities (a
smaller one made every use of the identities past it a GetAuthorizationToken call), and an
identity pushed out leaves its token and its client at the next purge (a login with the
same keys asks ECR again). An ECR call of a known identity that the upstream answers
with a refusal of the keys themselves (:data:`KEYS_REFUSED`: a session token that expired
since the login, a deleted key) ends the identity at once (:meth:`AwsIdentities.revoke`):
the registry token of the login outlives a short session, and nothing may be served on it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable

from cachetools import TTLCache

from gateway.ecr.calls import call
from gateway.ecr.clients import ClientFactory, Credentials, Upstream
from gateway.ecr.errors import SERVER_FAULTS, THROTTLES, EcrError
from gateway.ecr.retry import RetryPolicy
from gateway.ecr.tokens import AuthToken, TokenCache

log = logging.getLogger(__name__)

PURGE_INTERVAL = 60.0
# What AWS key ids, secrets and session tokens are made of (printable ASCII, no space):
# anything else could not be signed or sent (a newline in a header), and that failure would
# count as an outage of the upstream and open its circuit for every caller.
_KEY_MATERIAL = re.compile(r"[\x21-\x7e]+")
MAX_IDENTITIES = 10_000
IDENTITY_TTL = 12 * 3600.0  # ECR's registry token lifetime: renewed on every validation
# What AWS answers to a call signed with keys it no longer takes (as opposed to
# AccessDeniedException, IAM's verdict on one action by keys it does take).
KEYS_REFUSED = frozenset({"ExpiredTokenException", "ExpiredToken", "UnrecognizedClientException",
                          "InvalidClientTokenId", "InvalidSignatureException"})


def refused(exc: EcrError) -> bool:
    """The upstream turned the keys down, as opposed to failing or throttling."""
    if exc.code in THROTTLES or exc.code in SERVER_FAULTS:
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return isinstance(status, int) and 400 <= status < 500


class _Identities(TTLCache[str, Credentials]):
    """A TTLCache that hands what it drops (too old or too many) to ``dropped``."""

    def __init__(self, maxsize: int, ttl: float, timer: Callable[[], float],
                 dropped: list[Credentials]) -> None:
        super().__init__(maxsize, ttl, timer)
        self._dropped = dropped

    def popitem(self) -> tuple[str, Credentials]:
        key, value = super().popitem()
        self._dropped.append(value)
        return key, value

    def expire(self, time: float | None = None) -> list[tuple[str, Credentials]]:
        expired = super().expire(time)
        self._dropped.extend(value for _, value in expired)
        return expired


def split_password(password: str) -> tuple[str, str | None]:
    """``secret`` or ``secret:session-token`` (secrets never contain a colon)."""
    secret, sep, session = password.partition(":")
    return secret, (session if sep and session else None)


class AwsIdentities:
    def __init__(self, clients: ClientFactory, upstream_for: Callable[[Credentials], Upstream],
                 policy: RetryPolicy, *, refresh_margin: float = 1800.0,
                 clock: Callable[[], float] = time.time, max_identities: int = MAX_IDENTITIES,
                 identity_ttl: float = IDENTITY_TTL) -> None:
        self._clients = clients
        self._upstream_for = upstream_for
        self._policy = policy
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._tokens = TokenCache(self._fetch, refresh_margin=refresh_margin, clock=clock,
                                  maxsize=max_identities)
        self._dropped: list[Credentials] = []
        self._identities = _Identities(max_identities, identity_ttl, clock, self._dropped)
        self._pending: dict[str, Credentials] = {}  # logging in: not trusted yet
        self._expires: dict[str, float] = {}
        self._next_purge = clock() + PURGE_INTERVAL

    def handle_of(self, credentials: Credentials) -> str:
        material = "\0".join((credentials.access_key_id, credentials.secret_access_key,
                              credentials.session_token or ""))
        return hmac.new(self._key, material.encode(), hashlib.sha256).hexdigest()[:40]

    async def login(self, access_key_id: str, password: str) -> str | None:
        """The identity's handle if the upstream accepts these keys; None if it refuses
        them. Upstream outages raise (the caller answers 503, not "wrong password")."""
        secret, session = split_password(password)
        if not access_key_id or not secret:
            return None
        if not all(_KEY_MATERIAL.fullmatch(part) for part in (access_key_id, secret,
                                                               session or secret)):
            return None  # a wrong password, which the login rate limiter counts
        credentials = Credentials(access_key_id, secret, session)
        handle = self.handle_of(credentials)
        await self._purge()
        if handle not in self._identities:
            self._pending.setdefault(handle, credentials)
        try:
            return handle if await self._validate(handle) else None
        finally:
            if handle not in self._identities:  # refused or failed: keep nothing of it
                await self._forget(handle)

    async def credentials(self, handle: str) -> Credentials | None:
        """The keys behind ``handle`` if the identity is still known and valid (its
        registry token is renewed here once past its refresh point)."""
        await self._purge()
        if handle not in self._identities or not await self._validate(handle):
            return None
        return self._identities.get(handle)

    async def revoke(self, handle: str) -> None:
        """Forget ``handle`` now: the upstream refused its keys on a call (see
        :data:`KEYS_REFUSED`). A new login with the same keys asks the upstream again."""
        known = self._identities.get(handle)
        if known is not None:
            log.info("AWS identity %s no longer accepted by the upstream", known.access_key_id)
        await self._forget(handle)

    def __len__(self) -> int:
        return len(self._identities)

    async def _validate(self, handle: str) -> bool:
        try:
            token = await self._tokens.get(handle)
        except EcrError as exc:
            if not refused(exc):
                raise
            known = self._pending.get(handle) or self._identities.get(handle)
            log.info("AWS identity %s refused by the upstream: %s",
                     known.access_key_id if known else "?", exc.code)
            await self._forget(handle)
            return False
        except KeyError:  # forgotten while the check was under way
            return False
        credentials = self._pending.pop(handle, None) or self._identities.get(handle)
        if credentials is None:
            return False
        self._identities[handle] = credentials  # trusted now; its time starts again
        self._expires[handle] = token.expires_at
        return True

    async def _fetch(self, handle: object) -> AuthToken:
        key = str(handle)
        credentials = self._pending.get(key) or self._identities[key]
        client = await self._clients.client(self._upstream_for(credentials))
        answer = await call(client, "GetAuthorizationToken", self._policy)
        return AuthToken.from_ecr(answer["authorizationData"][0], self._clock())

    async def _purge(self) -> None:
        await self._drop_pushed_out()
        now = self._clock()
        if now < self._next_purge:
            return
        self._identities.expire()
        await self._drop_pushed_out()
        self._next_purge = now + PURGE_INTERVAL
        for handle, expires_at in list(self._expires.items()):
            if expires_at <= now:
                await self._forget(handle)

    async def _drop_pushed_out(self) -> None:
        """Identities the cache pushed out (too many, or too old) leave their token and their
        client, unless they logged in again since."""
        while self._dropped:
            credentials = self._dropped.pop()
            handle = self.handle_of(credentials)
            if handle in self._identities or handle in self._pending:
                continue
            self._tokens.invalidate(handle)
            self._expires.pop(handle, None)
            await self._close(credentials)

    async def _forget(self, handle: str) -> None:
        credentials = self._identities.pop(handle, None)
        pending = self._pending.pop(handle, None)
        self._expires.pop(handle, None)
        self._tokens.invalidate(handle)
        for gone in {credentials, pending} - {None}:
            assert gone is not None
            await self._close(gone)

    async def _close(self, credentials: Credentials) -> None:
        await self._clients.discard(
            lambda up: (up.access_key_id, up.secret_access_key, up.session_token)
            == (credentials.access_key_id, credentials.secret_access_key,
                credentials.session_token))
