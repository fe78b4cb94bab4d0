"""The token endpoint of the docker token-auth spec, served by the gateway itself.

``GET /token?service=…&scope=repository:team/app:pull,push`` with Basic credentials (or
none, for anonymous pulls) answers ``{"token", "access_token", "expires_in", "issued_at"}``:
a signed JWT granting the requested actions the rules allow (the intersection; scopes
left empty are dropped). ``offline_token=true`` adds a ``refresh_token``. A request names at
most :data:`MAX_SCOPES` scopes: clients ask for one to three, a token of more would not fit
the request header that carries it, and each costs a rule check and its bytes in the token.

``POST /token`` is the OAuth2 form (``grant_type=password`` with ``username``/``password``,
or ``grant_type=refresh_token``; ``scope`` space-separated; ``access_type=offline`` for a
refresh token), which containerd tries first and docker uses after a login that stored a
refresh token. Refresh tokens are offered only where they can be checked later without a
secret (htpasswd users; never AWS identities).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.auth.forwarded import client_address
from gateway.auth.logins import Login, Logins, parse_basic
from gateway.auth.rules import AccessRules
from gateway.auth.scopes import Scope, parse_scopes
from gateway.auth.tokens import InvalidToken, TokenService
from gateway.oci import errors as oci
from gateway.oci.errors import OciError

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_SCOPES = 100


class TokenServer:
    def __init__(self, tokens: TokenService, rules: AccessRules, logins: Logins) -> None:
        self.tokens = tokens
        self.rules = rules
        self.logins = logins

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/token", self.get)
        app.router.add_post("/token", self.post)

    async def get(self, request: web.Request) -> web.StreamResponse:
        login: Login | None = None
        scopes = _requested(request.query.getall("scope", []))
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, value = header.partition(" ")
            pair = parse_basic(value) if scheme.lower() == "basic" else None
            if pair is None:
                raise _bad_credentials("send Basic credentials, or none for anonymous access")
            login = await self._login(*pair, request)
        offline = request.query.get("offline_token", "").lower() == "true"
        return self._answer(login, scopes, offline)

    async def post(self, request: web.Request) -> web.StreamResponse:
        try:
            form = await request.post()
        except (ValueError, LookupError) as exc:
            # A form aiohttp cannot read (bytes that are not in its charset, a charset
            # Python does not know, multipart without or past its boundary) is the
            # client's: 400 naming the kind of fault, never the values sent.
            raise OciError(oci.REQUEST_INVALID, {"reason": type(exc).__name__},
                           message="the form body cannot be read") from None
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        grant = fields.get("grant_type", "")
        scopes = _requested([fields.get("scope", "")])
        if grant == "password":
            login = await self._login(fields.get("username", ""), fields.get("password", ""),
                                      request)
            offline = fields.get("access_type", "").lower() == "offline"
            return self._answer(login, scopes, offline)
        if grant == "refresh_token":
            try:
                claims = self.tokens.verify_refresh(fields.get("refresh_token", ""))
            except InvalidToken as exc:
                raise _bad_credentials(f"refresh token refused: {exc}") from None
            refreshed = self.logins.backend.still_valid(claims)
            if refreshed is None:
                raise _bad_credentials("the user or their password changed; log in again")
            return self._answer(refreshed, scopes, offline=False)
        raise OciError(oci.UNSUPPORTED, {"grant_type": grant[:50]}, status=400,
                       message="grant_type must be password or refresh_token")

    async def _login(self, user: str, password: str, request: web.Request) -> Login:
        login = await self.logins.check(user, password, client_address(request))
        if login is None:
            raise _bad_credentials("wrong user name or password")
        return login

    def _answer(self, login: Login | None, scopes: list[Scope],
                offline: bool) -> web.Response:
        subject = login.subject if login else None
        granted = self.rules.grant(subject, scopes)
        issued = self.tokens.issue_access(subject, granted, login.identity if login else None,
                                          login.fingerprint if login else None)
        body: dict[str, Any] = {
            "token": issued.token, "access_token": issued.token,
            "expires_in": issued.expires_in, "issued_at": issued.issued_at_rfc3339(),
            "scope": " ".join(str(scope) for scope in granted),
        }
        if (offline and login is not None and login.fingerprint is not None
                and self.logins.backend.offers_refresh_tokens and self.tokens.refresh_ttl > 0):
            body["refresh_token"] = self.tokens.issue_refresh(login.subject, login.fingerprint)
        return web.json_response(body, headers=NO_STORE)


def _requested(values: list[str]) -> list[Scope]:
    """The scopes asked for; 400 beyond :data:`MAX_SCOPES`, before any password is checked."""
    scopes = parse_scopes(values)
    if len(scopes) > MAX_SCOPES:
        raise OciError(oci.REQUEST_INVALID, {"scopes": len(scopes), "limit": MAX_SCOPES},
                       message=f"a token covers at most {MAX_SCOPES} scopes")
    return scopes


def _bad_credentials(reason: str) -> OciError:
    return OciError(oci.UNAUTHORIZED, {}, message=reason,
                    headers={"WWW-Authenticate": 'Basic realm="ecr-gateway"'})
