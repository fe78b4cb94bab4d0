"""ECR authorization tokens, cached per identity and region.

GetAuthorizationToken is throttled hard (about 20/s sustained) and its token is good for
12 hours, so one token serves every request of an identity in a region. A token is renewed
ahead of its ``expiresAt`` (never handed out in its last ``refresh_margin`` seconds), and
concurrent misses for one key share a single upstream call.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cachetools import TLRUCache

from gateway.observability.metrics import TOKEN_CACHE


@dataclass(frozen=True)
class AuthToken:
    username: str
    password: str = ""
    proxy_endpoint: str | None = None
    expires_at: float = 0.0  # epoch seconds
    issued_at: float = 0.0

    def __repr__(self) -> str:  # never print the secret
        return f"AuthToken(username={self.username!r}, expires_at={self.expires_at})"

    @classmethod
    def from_ecr(cls, data: dict[str, Any], now: float) -> AuthToken:
        decoded = base64.b64decode(data["authorizationToken"]).decode()
        username, _, password = decoded.partition(":")
        expires = data.get("expiresAt")
        expires_at = expires.timestamp() if isinstance(expires, datetime) else float(expires or 0)
        return cls(username, password, data.get("proxyEndpoint"), expires_at, now)


class TokenCache:
    def __init__(self, fetch: Callable[[Hashable], Awaitable[AuthToken]], *,
                 refresh_margin: float = 1800.0, maxsize: int = 4096,
                 clock: Callable[[], float] = time.time) -> None:
        self._fetch = fetch
        self._margin = refresh_margin
        self._clock = clock
        self._tokens: TLRUCache[Hashable, AuthToken] = TLRUCache(
            maxsize=maxsize, ttu=self._usable_until, timer=clock)
        self._pending: dict[Hashable, asyncio.Future[AuthToken]] = {}

    def _usable_until(self, _key: Hashable, token: AuthToken, _now: float) -> float:
        # Short-lived tokens are renewed at half their life rather than never being usable.
        lifetime = token.expires_at - token.issued_at
        return token.expires_at - min(self._margin, max(lifetime, 0) / 2)

    async def get(self, key: Hashable,
                  fetch: Callable[[], Awaitable[AuthToken]] | None = None) -> AuthToken:
        """The token of ``key``; on a miss ``fetch`` (default: the cache's own fetch of
        ``key``) obtains it, e.g. with credentials the key only names."""
        token = self._tokens.get(key)
        if token is not None:
            TOKEN_CACHE.labels("hit").inc()
            return token
        pending = self._pending.get(key)
        TOKEN_CACHE.labels("miss" if pending is None else "shared").inc()
        if pending is None:
            pending = asyncio.ensure_future(fetch() if fetch is not None else self._fetch(key))
            self._pending[key] = pending
            pending.add_done_callback(lambda done: self._settle(key, done))
        # shield: one waiter giving up must not cancel the call the others wait on.
        return await asyncio.shield(pending)

    def _settle(self, key: Hashable, done: asyncio.Future[AuthToken]) -> None:
        self._pending.pop(key, None)
        if not done.cancelled() and done.exception() is None:
            self._tokens[key] = done.result()

    def invalidate(self, key: Hashable) -> None:
        self._tokens.pop(key, None)
