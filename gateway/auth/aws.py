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
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable

from gateway.ecr.calls import call
from gateway.ecr.clients import ClientFactory, Credentials, Upstream
from gateway.ecr.errors import THROTTLES, EcrError
from gateway.ecr.retry import RetryPolicy
from gateway.ecr.tokens import AuthToken, TokenCache

log = logging.getLogger(__name__)

PURGE_INTERVAL = 60.0


def split_password(password: str) -> tuple[str, str | None]:
    """``secret`` or ``secret:session-token`` (secrets never contain a colon)."""
    secret, sep, session = password.partition(":")
    return secret, (session if sep and session else None)


class AwsIdentities:
    def __init__(self, clients: ClientFactory, upstream_for: Callable[[Credentials], Upstream],
                 policy: RetryPolicy, *, refresh_margin: float = 1800.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._clients = clients
        self._upstream_for = upstream_for
        self._policy = policy
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._tokens = TokenCache(self._fetch, refresh_margin=refresh_margin, clock=clock)
        self._identities: dict[str, Credentials] = {}
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
        credentials = Credentials(access_key_id, secret, session)
        handle = self.handle_of(credentials)
        self._identities.setdefault(handle, credentials)
        await self._purge()
        return handle if await self._validate(handle) else None

    async def credentials(self, handle: str) -> Credentials | None:
        """The keys behind ``handle`` if the identity is still known and valid (its
        registry token is renewed here once past its refresh point)."""
        await self._purge()
        if handle not in self._identities or not await self._validate(handle):
            return None
        return self._identities.get(handle)

    def __len__(self) -> int:
        return len(self._identities)

    async def _validate(self, handle: str) -> bool:
        try:
            token = await self._tokens.get(handle)
        except EcrError as exc:
            if exc.status >= 500 or exc.code in THROTTLES:
                raise
            log.info("AWS identity %s refused by the upstream: %s",
                     self._identities[handle].access_key_id, exc.code)
            await self._forget(handle)
            return False
        except KeyError:  # forgotten while the check was under way
            return False
        self._expires[handle] = token.expires_at
        return handle in self._identities

    async def _fetch(self, handle: object) -> AuthToken:
        credentials = self._identities[str(handle)]
        client = await self._clients.client(self._upstream_for(credentials))
        answer = await call(client, "GetAuthorizationToken", self._policy)
        return AuthToken.from_ecr(answer["authorizationData"][0], self._clock())

    async def _purge(self) -> None:
        now = self._clock()
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_INTERVAL
        for handle, expires_at in list(self._expires.items()):
            if expires_at <= now:
                await self._forget(handle)

    async def _forget(self, handle: str) -> None:
        credentials = self._identities.pop(handle, None)
        self._expires.pop(handle, None)
        self._tokens.invalidate(handle)
        if credentials is not None:
            await self._clients.discard(
                lambda up: (up.access_key_id, up.secret_access_key, up.session_token)
                == (credentials.access_key_id, credentials.secret_access_key,
                    credentials.session_token))
