"""Authentication of every ``/v2`` request and the access check before each handler.

The middleware reads the credentials (a Bearer token this gateway issued, or Basic
credentials on the request itself) into ``request["principal"]``; with ``auth.mode: aws`` it
also makes the caller's AWS keys the ones this request's ECR calls are signed with. Bad
credentials are refused at once; so are AWS keys the upstream stops taking mid-session (an
expired session token): the identity is forgotten and the request answers 401. ``/v2/``
itself answers 401 to callers without credentials, which is how ``docker login`` learns
where the token server is.

The OCI dispatcher then calls :meth:`Authenticator.check_access` with the repository and
the action (pull, push, delete, catalog). A token must hold that action for that
repository; Basic and anonymous callers are judged by the rules directly. Refusals: 401
with a challenge when credentials are missing or a token is merely too narrow (the client
fetches a wider one), 403 DENIED when the rules do not allow the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web

from gateway.auth.aws import KEYS_REFUSED, AwsIdentities
from gateway.auth.challenge import (
    Challenger,
    denied,
    login_required,
    metrics_login_required,
)
from gateway.auth.forwarded import client_address
from gateway.auth.logins import Logins, parse_basic
from gateway.auth.rules import AccessRules
from gateway.auth.scopes import Scope, needed_scope
from gateway.auth.tokens import AccessClaims, InvalidToken, TokenService
from gateway.ecr.errors import EcrError
from gateway.oci.context import MOUNT_REFUSED
from gateway.oci.middleware import Handler
from gateway.oci.request import CALLER

_BASE = re.compile(r"^/v2/?$")


@dataclass(frozen=True)
class Principal:
    subject: str | None  # None: no credentials
    token: AccessClaims | None = None  # Bearer: what the token grants; else the rules decide
    identity: str | None = None  # aws: the caller's identity handle

    @property
    def has_credentials(self) -> bool:
        return self.subject is not None or self.token is not None


ANONYMOUS = Principal(None)
PRINCIPAL = "principal"


class Authenticator:
    def __init__(self, tokens: TokenService, rules: AccessRules, logins: Logins,
                 challenger: Challenger, identities: AwsIdentities | None = None) -> None:
        self.tokens = tokens
        self.rules = rules
        self.logins = logins
        self.challenger = challenger
        self.identities = identities

    # -- who is calling ---------------------------------------------------------------------

    async def authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization", "")
        if not header:
            return ANONYMOUS
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            try:
                claims = self.tokens.verify_access(value.strip())
            except InvalidToken as exc:
                raise self.challenger.unauthorized(request, error="invalid_token",
                                                   reason=str(exc)) from None
            # A user removed, or whose password changed, loses what tokens held at once.
            if claims.subject is not None and not self.logins.backend.still_holds(
                    claims.subject, claims.fingerprint):
                raise self.challenger.unauthorized(
                    request, error="invalid_token",
                    reason="the user or their password changed; log in again")
            return Principal(claims.subject, claims, claims.identity)
        if scheme == "basic":
            pair = parse_basic(value)
            login = await self.logins.check(*pair, client_address(request)) if pair else None
            if login is None:
                raise self.challenger.unauthorized(request, reason="wrong user name or password")
            return Principal(login.subject, None, login.identity)
        # The header is not echoed: a bare token sent without a scheme is still a secret.
        raise self.challenger.unauthorized(
            request, reason="unsupported authorization scheme (Basic or Bearer)")

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.rel_url.raw_path
        if not (path == "/v2" or path.startswith("/v2/")):
            return await handler(request)
        principal = await self.authenticate(request)
        request[PRINCIPAL] = principal
        if _BASE.match(path) and not principal.has_credentials:
            raise self.challenger.unauthorized(request)
        credentials = None
        if principal.identity is not None:
            if self.identities is not None:
                credentials = await self.identities.credentials(principal.identity)
            if credentials is None:  # expired, revoked, or issued before a restart
                raise self.challenger.unauthorized(
                    request, error="invalid_token", reason="the AWS identity is no longer valid")
        request[CALLER] = credentials  # the dispatcher puts them in the RequestContext
        if credentials is None:
            return await handler(request)
        try:
            return await handler(request)
        except EcrError as exc:
            if exc.code not in KEYS_REFUSED or self.identities is None:
                raise
            # Not a 502 to retry: the login's registry token outlives a session token, so
            # the identity ends here (its cached answers with it) and the client logs in again.
            assert principal.identity is not None
            await self.identities.revoke(principal.identity)
            raise self.challenger.unauthorized(
                request, error="invalid_token",
                reason="the upstream no longer accepts these AWS keys") from None

    async def require_login(self, request: web.Request) -> None:
        """Any valid login (Basic, or a token issued to a user) may read ``/metrics``."""
        principal = await self.authenticate(request)
        if principal.subject is None:
            raise metrics_login_required()

    # -- may they do it ---------------------------------------------------------------------

    async def check_access(self, request: web.Request, name: str | None, action: str) -> None:
        principal: Principal = request.get(PRINCIPAL, ANONYMOUS)
        source = request.query.get("from") if request.get("route") == "end-4a" else None
        if source is None or not request.query.get("mount"):
            self._require(request, principal, name, action)
            return
        # Mounting copies a blob out of `from`: a challenge asks for both scopes at once.
        pull_source = needed_scope(source, "pull")
        self._require(request, principal, name, action, [pull_source])
        if self._allows(request, principal, source, "pull"):
            return
        if not principal.has_credentials:
            raise login_required(self.challenger, request, [needed_scope(name, action),
                                                            pull_source])
        # Not readable with these credentials: an ordinary upload, as if the blob were not
        # there, so the caller learns nothing about the source.
        request[MOUNT_REFUSED] = True

    def _allows(self, request: web.Request, principal: Principal, name: str | None,
                action: str) -> bool:
        scope = needed_scope(name, action)
        exact = Scope(scope.type, scope.name, frozenset({action}) if name else scope.actions)
        if principal.token is not None:
            # A token names the client name only, granted as if no mirror were named: where
            # this request resolves it (its ?ns=) is judged now, with the rules of that route
            # (an anonymous token must not open a mirror closed to anonymous pulls).
            return principal.token.allows(exact) and (
                name is None or action in self.rules.allowed(principal.subject, name,
                                                              _ns(request)))
        return self._rules_allow(request, principal.subject, name, action)

    def _require(self, request: web.Request, principal: Principal, name: str | None,
                 action: str, also: list[Scope] | None = None) -> None:
        if self._allows(request, principal, name, action):
            return
        scope = needed_scope(name, action)
        scopes = [scope, *(also or [])]
        if principal.subject is None:
            raise login_required(self.challenger, request, scopes)
        if self._rules_allow(request, principal.subject, name, action):  # token too narrow
            raise self.challenger.unauthorized(request, scopes, error="insufficient_scope")
        raise denied(scope, principal.subject, action)

    def _rules_allow(self, request: web.Request, subject: str | None, name: str | None,
                     action: str) -> bool:
        if name is None:
            return self.rules.may_list_catalog(subject)
        return action in self.rules.allowed(subject, name, _ns(request))

    def may_pull(self, request: web.Request, name: str) -> bool:
        """Whether the catalog shows ``name`` to this caller. The catalog lists ECR's own
        names, never a mirror's: judged without the request's ``?ns=``, which would resolve
        them through a mirror's rules instead."""
        principal: Principal = request.get(PRINCIPAL, ANONYMOUS)
        return "pull" in self.rules.allowed(principal.subject, name)


def _ns(request: web.Request) -> str | None:
    """The upstream registry a mirror client named (``?ns=<host>``): where names resolve."""
    return request.query.get("ns") or None
