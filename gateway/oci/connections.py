"""Bounds on the client connections the gateway holds open.

Each connection costs a file descriptor, and the process's descriptors are also its
requests' own: spools, cache files, connections to ECR and to Redis. With the open-file
limit a systemd service gets by default (1024), one client holding 1,100 idle connections
(each closed after ``limits.header_timeout_seconds``, and opened again) stopped the gateway:
``accept()`` failed (EMFILE) so no one else was answered, requests in progress could open no
file or ECR connection, and asyncio logged a traceback at every try (46 MB of log in 90 s).

So:

* at start the soft open-file limit is raised to the hard one, as Go programs (distribution,
  zot, containerd) do since Go 1.19: a low soft limit is a leftover of ``select()``, which
  the event loop does not use;
* past ``limits.max_client_connections`` open connections a new one gets ``503
  UNAVAILABLE`` with Retry-After and is closed before anything of it is read, as AWS and
  distribution answer a moment they have no room for (clients retry): what is left of the
  descriptors is the requests' own;
* one client holds at most ``limits.max_connections_per_client`` of them, and never more
  than a quarter, so that one client cannot take the whole total from the others: past
  it, ``429 TOOMANYREQUESTS``, closed. A connection is counted by its address's key
  (gateway/auth/client_keys.py: no request, so no login, is known yet). A trusted proxy's
  connections count in the total only: its clients are told apart by each request's
  ``X-Forwarded-For``.

The ``metrics_listen`` port's connections count in the same bounds (gateway/serve.py): they
take descriptors of the same process. Over TLS served by the gateway, a connection counts
before its handshake (gateway/oci/tls_admission.py).

Refusals are said once a minute (their address included) and counted in
``ecr_gateway_connection_refusals_total{bound}``; ``ecr_gateway_client_connections`` is the
number open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from dataclasses import dataclass

from gateway.auth.client_keys import ClientKeys, client_keys
from gateway.auth.forwarded import ProxyTrust, parse_networks
from gateway.config import Config
from gateway.observability.logs import Sparing, unsaid
from gateway.observability.metrics import CLIENT_CONNECTIONS, CONNECTION_REFUSALS
from gateway.oci.errors import TOOMANYREQUESTS, UNAVAILABLE, ErrorCode
from gateway.oci.limits import CLIENT_SHARE, Holdings

log = logging.getLogger(__name__)

MAX_DERIVED_TOTAL = 16384  # the derived total's cap, whatever the open-file limit
_REFUSED = Sparing()


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20  # the kernel's default nr_open
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft if soft != resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # a container's seccomp, a limit above nr_open
        return soft
    return hard


def derived_total(open_files: int) -> int:
    """Half the open-file limit (the other half for the requests' files and upstream
    connections), at most ``MAX_DERIVED_TOTAL``."""
    return max(1, min(open_files // 2, MAX_DERIVED_TOTAL))


def _answer(error: ErrorCode, message: str, limit: int) -> bytes:
    body = json.dumps({"errors": [{"code": error.code, "message": message,
                                   "detail": {"limit": limit}}]}).encode()
    reason = {429: "Too Many Requests", 503: "Service Unavailable"}[error.status]
    return (f"HTTP/1.1 {error.status} {reason}\r\nContent-Type: application/json\r\n"
            "Docker-Distribution-API-Version: registry/2.0\r\nRetry-After: 1\r\n"
            f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def connection_bounds(config: Config, open_files: int) -> ConnectionBounds:
    """The bounds ``config.limits`` set, for a process allowed ``open_files`` descriptors."""
    limits = config.limits
    total = (derived_total(open_files) if limits.max_client_connections is None
             else limits.max_client_connections)
    per_client = limits.max_connections_per_client
    if total:  # however it is set, one client never holds more than a quarter of the total
        per_client = min(per_client or total, max(total // CLIENT_SHARE, 1))
    return ConnectionBounds(total, per_client, client_keys(config),
                            ProxyTrust(parse_networks(config.trusted_proxies)))


@dataclass(frozen=True)
class Admitted:
    """One admitted connection: :meth:`ConnectionBounds.leave` it once it closes."""
    key: str | None


class ConnectionBounds:
    """The open connections of one server, in total and per client key; 0: no bound."""

    def __init__(self, total: int, per_client: int, keys: ClientKeys,
                 proxies: ProxyTrust) -> None:
        self.total = total
        self.per_client = per_client
        self._keys = keys
        self._proxies = proxies
        self._held = Holdings()
        self._busy = _answer(UNAVAILABLE, "the gateway holds as many connections as it may",
                             total)
        self._too_many = _answer(TOOMANYREQUESTS, "this client holds as many connections "
                                 "as one client may", per_client)

    def admit(self, transport: asyncio.BaseTransport) -> Admitted | None:
        """Count the connection in, or answer it with the refusal and close it (None)."""
        verdict = self.verdict(transport)
        if isinstance(verdict, Admitted):
            return verdict
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(verdict)
        transport.close()  # unread bytes are dropped: the client asked for nothing yet
        return None

    def verdict(self, transport: asyncio.BaseTransport) -> Admitted | bytes:
        """Count the connection in, or the answer that refuses it (the refusal is said and
        counted here; sending it and closing are the caller's)."""
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else None
        if self.total and self._held.total >= self.total:
            return self._refuse("total", self._busy, address)
        key = None if self._proxies.trusts(address) else self._keys.of(address)
        if key is not None and self.per_client and self._held.of(key) >= self.per_client:
            return self._refuse("client", self._too_many, address)
        self._held.add(key, 1)
        CLIENT_CONNECTIONS.set(self._held.total)
        return Admitted(key)

    def leave(self, admitted: Admitted) -> None:
        self._held.add(admitted.key, -1)
        CLIENT_CONNECTIONS.set(self._held.total)

    def _refuse(self, bound: str, answer: bytes, address: str | None) -> bytes:
        CONNECTION_REFUSALS.labels(bound).inc()
        count = _REFUSED.due(bound)
        if count is not None:
            limit = self.total if bound == "total" else self.per_client
            log.warning("connection from %s refused: %s (%s %d)%s", address,
                        "the gateway is at its connection bound" if bound == "total"
                        else "the client is at its connection bound",
                        "limits.max_client_connections" if bound == "total"
                        else "limits.max_connections_per_client", limit, unsaid(count))
        return answer
