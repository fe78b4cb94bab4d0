"""The answers that refuse a request: 401 with a Bearer challenge, 403 DENIED, 429.

``WWW-Authenticate: Bearer realm="https://gw/token",service="ecr-gateway",
scope="repository:team/app:pull,push"`` tells a client where to get a token and for what;
``error="invalid_token"`` / ``"insufficient_scope"`` (RFC 6750) say why the one it sent
was not enough.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.auth.scopes import Scope
from gateway.oci import errors as oci
from gateway.oci.errors import OciError


@dataclass(frozen=True)
class Challenger:
    realm: str | None  # None: the /token endpoint of the address the client used
    service: str

    def realm_for(self, request: web.Request) -> str:
        return self.realm or f"{request.scheme}://{request.host}/token"

    def header(self, request: web.Request, scope: Scope | None = None,
               error: str | None = None) -> str:
        parts = [f'realm="{self.realm_for(request)}"', f'service="{_quote(self.service)}"']
        if scope is not None:
            parts.append(f'scope="{_quote(str(scope))}"')
        if error is not None:
            parts.append(f'error="{error}"')
        return "Bearer " + ",".join(parts)

    def unauthorized(self, request: web.Request, scope: Scope | None = None, *,
                     error: str | None = None, reason: str | None = None) -> OciError:
        detail: list[dict[str, str]] | dict[str, str] = {}
        if scope is not None:
            detail = [{"Type": scope.type, "Name": scope.name,
                       "Action": ",".join(sorted(scope.actions))}]
        return OciError(oci.UNAUTHORIZED, detail, message=reason,
                        headers={"WWW-Authenticate": self.header(request, scope, error)})


def denied(scope: Scope, subject: str) -> OciError:
    return OciError(oci.DENIED, {"subject": subject, "scope": str(scope)})


def too_many_failures(retry_after: int) -> OciError:
    return OciError(oci.TOOMANYREQUESTS, {"retry_after_seconds": retry_after},
                    message="too many failed logins; try again later",
                    headers={"Retry-After": str(retry_after)})


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
