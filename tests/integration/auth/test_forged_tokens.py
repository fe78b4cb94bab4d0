"""Tokens the gateway did not issue, or that do not cover the request, are refused by a
running gateway: wrong key, alg=none, HS256 keyed with the public key, expired, tampered,
for another repository, read-only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.auth.tokens import GENERATED_KEY, SigningKey
from tests.integration.auth.helpers import (
    SERVICE,
    bearer,
    parse_challenge,
    request,
    token_for,
)
from tests.support.gateway import GatewayProcess

PUSH_ALL = [{"type": "repository", "name": "team-a/app", "actions": ["pull", "push", "delete"]}]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": "ecr-gateway", "sub": "alice", "aud": SERVICE, "iat": now, "nbf": now,
              "exp": now + 300, "jti": "x", "use": "access", "access": PUSH_ALL}
    claims.update(changes)
    return claims


def _gateway_key(gateway: GatewayProcess) -> SigningKey:
    return SigningKey.from_pem((gateway.data_dir / GENERATED_KEY).read_bytes())


def wrong_key(gateway: GatewayProcess) -> str:
    return jwt.encode(_claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")


def alg_none(gateway: GatewayProcess) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(_claims()).encode())}."


def hs256_with_public_key(gateway: GatewayProcess) -> str:
    key = _gateway_key(gateway)
    signing_input = (_b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
                     + "." + _b64(json.dumps(_claims()).encode()))
    signature = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def expired(gateway: GatewayProcess) -> str:
    """Signed with the gateway's real key, but past its expiry."""
    now = int(time.time())
    return jwt.encode(_claims(iat=now - 900, nbf=now - 900, exp=now - 600),
                      _gateway_key(gateway).private, algorithm="ES256")


def other_audience(gateway: GatewayProcess) -> str:
    return jwt.encode(_claims(aud="another-registry"), _gateway_key(gateway).private,
                      algorithm="ES256")


def refresh_as_access(gateway: GatewayProcess) -> str:
    return jwt.encode(_claims(use="refresh", fpr="x"), _gateway_key(gateway).private,
                      algorithm="ES256")


FORGERIES: dict[str, Callable[[GatewayProcess], str]] = {
    "wrong-key": wrong_key, "alg-none": alg_none, "hs256-confusion": hs256_with_public_key,
    "expired": expired, "other-audience": other_audience, "refresh-token": refresh_as_access,
}


@pytest.mark.parametrize("forge", list(FORGERIES), ids=list(FORGERIES))
async def test_forged_tokens_are_refused(authgw: GatewayProcess,
                                         session: aiohttp.ClientSession, forge: str) -> None:
    token = FORGERIES[forge](authgw)
    for method, path in (("POST", "/v2/team-a/app/blobs/uploads/"),
                         ("GET", "/v2/team-a/app/tags/list"), ("GET", "/v2/")):
        answer = await request(session, method, authgw.url + path, bearer(token))
        assert answer.status == 401, (forge, path, answer.status, answer.body)
        assert parse_challenge(answer.headers["WWW-Authenticate"])["error"] == "invalid_token"


async def test_tampered_token_is_refused(authgw: GatewayProcess,
                                         session: aiohttp.ClientSession) -> None:
    genuine = await token_for(session, authgw.url, ["repository:team-a/app:pull"],
                              ("viewer", "viewer-pw"))
    header, _, signature = genuine.split(".")
    widened = _b64(json.dumps(_claims(sub="viewer")).encode())
    answer = await request(session, "POST", authgw.url + "/v2/team-a/app/blobs/uploads/",
                           bearer(f"{header}.{widened}.{signature}"))
    assert answer.status == 401


async def test_genuine_tokens_hold_only_what_they_say(authgw: GatewayProcess,
                                                      session: aiohttp.ClientSession) -> None:
    """A pull token cannot push; a token for one repository cannot touch another; and a
    genuine token does pass (so the refusals above are not the gateway refusing all)."""
    pull = await token_for(session, authgw.url, ["repository:team-a/app:pull"],
                           ("alice", "alice-pw"))
    assert (await request(session, "GET", authgw.url + "/v2/team-a/app/tags/list",
                          bearer(pull))).status in (200, 404)
    push = await request(session, "POST", authgw.url + "/v2/team-a/app/blobs/uploads/",
                         bearer(pull))
    assert push.status == 401
    assert parse_challenge(push.headers["WWW-Authenticate"]) == {
        "realm": f"{authgw.url}/token", "service": SERVICE,
        "scope": "repository:team-a/app:pull,push", "error": "insufficient_scope"}
    other = await request(session, "GET", authgw.url + "/v2/team-a/other/tags/list",
                          bearer(pull))
    assert other.status == 401
    catalog = await request(session, "GET", authgw.url + "/v2/_catalog", bearer(pull))
    assert catalog.status == 401  # the catalog needs its own scope
    assert parse_challenge(catalog.headers["WWW-Authenticate"])["scope"] == \
        "registry:catalog:*"


def test_generated_key_file_is_private(authgw: GatewayProcess) -> None:
    path: Path = authgw.data_dir / GENERATED_KEY
    assert path.stat().st_mode & 0o777 == 0o600
