"""The answers that refuse a request: 401 with a Bearer challenge, 403 DENIED, 429.

``WWW-Authenticate: Bearer realm="https://gw/token",service="ecr-gateway",
scope="repository:team/app:pull,push"`` tells a client where to get a token and for what;
``error="invalid_token"`` / ``"insufficient_scope"`` (RFC 6750) say why the one it sent
was not enough. A request needing several scopes (a blob mount: the target and the source)
names them all, space-separated, so that one token covers it.

The realm is where clients send their passwords, so it never comes from what a client can
forge: it is ``auth.token.realm`` when set; else the host the client used only when it is
in ``auth.token.realm_hosts`` (or a loopback name on a loopback listener), with scheme and
host from a trusted proxy's ``X-Forwarded-Proto``/``-Host``; else the address the
connection arrived on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import web

from ecr_model.hosts import is_loopback
from gateway.auth.forwarded import ProxyTrust
from gateway.auth.scopes import Scope
from gateway.config.errors import ConfigError
from gateway.oci import errors as oci
from gateway.oci.errors import OciError


@dataclass(frozen=True)
class Challenger:
    realm: str | None  # None: from the request, as the module docstring says
    service: str
    realm_hosts: frozenset[str] = frozenset()  # lower-case host[:port]
    trust: ProxyTrust = field(default_factory=ProxyTrust)
    listen: str = "127.0.0.1:5000"  # the last resort when the socket cannot tell

    def realm_for(self, request: web.Request) -> str:
        if self.realm:
            return self.realm
        return f"{self.trust.scheme(request)}://{self._host(request)}/token"

    def _host(self, request: web.Request) -> str:
        forwarded = self.trust.forwarded_host(request)
        if forwarded is not None and (not self.realm_hosts
                                      or forwarded.lower() in self.realm_hosts):
            return forwarded
        local = _local_address(request) or self.listen
        claimed = request.headers.get("Host", "")
        if not _HOST.fullmatch(claimed):  # "localhost:5000@evil.example" is no loopback host
            claimed = ""
        if claimed.lower() in self.realm_hosts:
            return claimed
        if claimed and is_loopback(_hostname(claimed)) and is_loopback(_hostname(local)):
            return claimed  # only a client on this machine reaches a loopback listener
        return local

    def header(self, request: web.Request, scope: Scope | Sequence[Scope] | None = None,
               error: str | None = None) -> str:
        parts = [f'realm="{self.realm_for(request)}"', f'service="{_quote(self.service)}"']
        scopes = _as_list(scope)
        if scopes:
            parts.append(f'scope="{_quote(" ".join(str(s) for s in scopes))}"')
        if error is not None:
            parts.append(f'error="{error}"')
        return "Bearer " + ",".join(parts)

    def unauthorized(self, request: web.Request, scope: Scope | Sequence[Scope] | None = None,
                     *, error: str | None = None, reason: str | None = None) -> OciError:
        detail: list[dict[str, str]] | dict[str, str] = {}
        scopes = _as_list(scope)
        if scopes:
            detail = [{"Type": s.type, "Name": s.name, "Action": ",".join(sorted(s.actions))}
                      for s in scopes]
        return OciError(oci.UNAUTHORIZED, detail, message=reason,
                        headers={"WWW-Authenticate": self.header(request, scopes, error)})


def _as_list(scope: Scope | Sequence[Scope] | None) -> list[Scope]:
    if scope is None:
        return []
    return [scope] if isinstance(scope, Scope) else list(scope)


# A Host header that is a host name or address and a port, nothing more.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")


def _hostname(host: str) -> str:
    """``host`` of ``host:port`` / ``[v6]:port``."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _local_address(request: web.Request) -> str | None:
    """host:port the connection arrived on."""
    transport = request.transport
    sock = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(sock, tuple) or len(sock) < 2 or not isinstance(sock[0], str):
        return None
    host = f"[{sock[0]}]" if ":" in sock[0] else sock[0]
    return f"{host}:{sock[1]}"


# What a client prints of a refusal is its message: it says what to do next (the reference
# registry's words first, which clients and scripts know).
LOG_IN_FIRST = f"{oci.UNAUTHORIZED.message}: log in first (docker, podman or skopeo login)"


def login_required(challenger: Challenger, request: web.Request,
                   scopes: Sequence[Scope]) -> OciError:
    """A caller without credentials asking for what only a login may do."""
    return challenger.unauthorized(request, scopes, reason=LOG_IN_FIRST)


def denied(scope: Scope, subject: str, action: str) -> OciError:
    """A logged-in caller the access rules refuse: who, what and on what, in the message."""
    verb = {"push": "push to", "pull": "pull from", "delete": "delete from"}.get(action, action)
    what = f"{verb} {scope.name}" if scope.type == "repository" else "list the catalog"
    return OciError(oci.DENIED, {"subject": subject, "scope": str(scope)},
                    message=f"{oci.DENIED.message}: {subject} may not {what} (no access rule "
                    "of this gateway's auth.rules allows it)")


def metrics_login_required() -> OciError:
    return OciError(oci.UNAUTHORIZED, {}, message="the metrics need a login",
                    headers={"WWW-Authenticate": 'Basic realm="ecr-gateway metrics"'})


def too_many_failures(retry_after: int) -> OciError:
    return OciError(oci.TOOMANYREQUESTS, {"retry_after_seconds": retry_after},
                    message="too many failed logins; try again later",
                    headers={"Retry-After": str(retry_after)})


def too_many_checks(retry_after: int) -> OciError:
    """Password checks wait for a thread already as many as may (not the client's failures:
    its guess is not counted)."""
    return OciError(oci.TOOMANYREQUESTS, {"retry_after_seconds": retry_after},
                    message="too many logins waiting to be checked; try again shortly",
                    headers={"Retry-After": str(retry_after)})


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def check_realm(realm: str | None) -> str | None:
    """``auth.token.realm`` (called by gateway/config/models.py): an http(s) URL, since
    clients send their passwords there."""
    if realm is not None and not re.match(r"^https?://[^/\s]+", realm):
        raise ConfigError("", f"must be an http(s) URL, got {realm!r}")
    return realm
