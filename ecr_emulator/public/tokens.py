"""Bearer tokens of the public registry endpoint, and its pull rate limits.

``GET /token`` hands out a token, as public.ecr.aws does: anonymous without credentials, or
authenticated with HTTP Basic ``AWS:<password>`` where the password is the one ECR Public's
GetAuthorizationToken issued (a wrong one is 401). A token is ``<payload>.<signature>``: the
base64url JSON ``{"kind", "sub", "exp"}`` signed with HMAC-SHA256 under the registry's secret,
so it survives restarts and cannot be forged or edited.

Manifest reads are rate limited per token holder, as ECR Public limits image pulls: an
anonymous caller (keyed by its address) gets ``public_anonymous_pull_rate`` per second, an
authenticated one (keyed by its access key) ``public_authenticated_pull_rate``, both with
bursts of ten seconds' worth. Beyond that the endpoint answers 429 TOOMANYREQUESTS with
Retry-After.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass

import orjson

from ecr_emulator.settings import Settings

ANONYMOUS = "anonymous"
AUTHENTICATED = "authenticated"
LIFETIME = 3600
BURST_SECONDS = 10


@dataclass(frozen=True)
class Grant:
    kind: str  # ANONYMOUS or AUTHENTICATED
    subject: str  # client address or access key id
    expires_at: float


def issue(secret: bytes, grant: Grant) -> str:
    payload = base64.urlsafe_b64encode(orjson.dumps(
        {"kind": grant.kind, "sub": grant.subject, "exp": grant.expires_at})).decode()
    return f"{payload}.{_sign(secret, payload)}"


def verify(secret: bytes, token: str, now: float | None = None) -> Grant | None:
    payload, _, signature = token.partition(".")
    if not hmac.compare_digest(_sign(secret, payload), signature):
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload.encode()))
        grant = Grant(str(claims["kind"]), str(claims["sub"]), float(claims["exp"]))
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None
    return grant if grant.expires_at > (time.time() if now is None else now) else None


def _sign(secret: bytes, payload: str) -> str:
    return hmac.new(secret, b"public-token\n" + payload.encode(), hashlib.sha256).hexdigest()


class PullLimits:
    """Token buckets per (kind, subject)."""

    def __init__(self, settings: Settings) -> None:
        self._rates = {ANONYMOUS: settings.public_anonymous_pull_rate,
                       AUTHENTICATED: settings.public_authenticated_pull_rate}
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # tokens, at

    def take(self, grant: Grant, now: float | None = None) -> float:
        """0 if this read may proceed, else the seconds to wait before the next one."""
        now = time.monotonic() if now is None else now
        rate = float(self._rates.get(grant.kind, 1))
        capacity = rate * BURST_SECONDS
        key = (grant.kind, grant.subject)
        tokens, at = self._buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + (now - at) * rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / rate
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > 100_000:  # forget idle holders
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 3600}
        return 0.0
