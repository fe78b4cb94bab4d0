"""Every route of the OCI endpoint table, with every method, refuses callers without the
right credentials when auth is on — walked from the table itself, so a new route cannot
be added without being covered."""

from __future__ import annotations

import re

import aiohttp
import pytest

from gateway.oci.routes import _ROUTES
from tests.integration.auth.helpers import (
    Answer,
    basic,
    bearer,
    parse_challenge,
    request,
    token_for,
)
from tests.support.gateway import GatewayProcess

SAMPLES = {"name": "team-a/app", "digest": "sha256:" + "a" * 64,
           "upload_id": "00000000-0000-4000-8000-000000000000", "reference": "v1"}
WRITES = {"push", "delete"}


def _path(pattern: re.Pattern[str]) -> str:
    """A concrete path the route's pattern matches, from its named groups."""
    text = pattern.pattern.strip("^$").replace("/?", "/")
    text = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: SAMPLES[m[1]], text)
    assert pattern.match(text), (pattern.pattern, text)
    return text


ENDPOINTS = [(route.spec_id, method, _path(route.pattern), action)
             for route in _ROUTES for method, (_, action) in route.methods.items()]


def test_the_walk_covers_the_table() -> None:
    assert len(ENDPOINTS) >= 15
    assert {action for *_, action in ENDPOINTS} == {None, "pull", "push", "delete", "catalog"}


async def _call(session: aiohttp.ClientSession, gateway: GatewayProcess, method: str,
                path: str, headers: dict[str, str]) -> Answer:
    return await request(session, method, gateway.url + path, headers,
                         data=b"{}" if method in ("PUT", "PATCH", "POST") else None)


@pytest.mark.parametrize(("spec_id", "method", "path", "action"), ENDPOINTS,
                         ids=[f"{e[0]}-{e[1]}" for e in ENDPOINTS])
async def test_without_credentials(authgw: GatewayProcess, session: aiohttp.ClientSession,
                                   spec_id: str, method: str, path: str,
                                   action: str | None) -> None:
    answer = await _call(session, authgw, method, path, {})
    assert answer.status == 401, (answer.status, answer.body)
    assert method == "HEAD" or answer.code == "UNAUTHORIZED"  # HEAD answers carry no body
    challenge = parse_challenge(answer.headers["WWW-Authenticate"])
    assert challenge["realm"] == f"{authgw.url}/token"
    if action == "catalog":
        assert challenge["scope"] == "registry:catalog:*"
    elif action is not None:
        assert challenge["scope"].startswith("repository:team-a/app:")
        assert action in challenge["scope"]


@pytest.mark.parametrize(("spec_id", "method", "path", "action"), ENDPOINTS,
                         ids=[f"{e[0]}-{e[1]}" for e in ENDPOINTS])
async def test_with_a_token_for_another_repository(
        authgw: GatewayProcess, session: aiohttp.ClientSession, spec_id: str, method: str,
        path: str, action: str | None) -> None:
    """alice may do everything in team-a/, but this token is for team-a/other only."""
    token = await token_for(session, authgw.url, ["repository:team-a/other:pull,push,delete"],
                            ("alice", "alice-pw"))
    answer = await _call(session, authgw, method, path, bearer(token))
    if action is None:
        assert answer.status == 200  # the base endpoint only needs a valid token
        return
    assert answer.status == 401, (answer.status, answer.body)
    challenge = parse_challenge(answer.headers["WWW-Authenticate"])
    assert challenge["error"] == "insufficient_scope"  # fetch a wider token


@pytest.mark.parametrize(("spec_id", "method", "path", "action"),
                         [e for e in ENDPOINTS if e[3] in WRITES],
                         ids=[f"{e[0]}-{e[1]}" for e in ENDPOINTS if e[3] in WRITES])
async def test_read_only_token_and_user(authgw: GatewayProcess,
                                        session: aiohttp.ClientSession, spec_id: str,
                                        method: str, path: str, action: str) -> None:
    """viewer may only pull team-a/: with a token (which holds pull only) or with Basic
    credentials, every write is refused with 403 DENIED."""
    token = await token_for(session, authgw.url,
                            ["repository:team-a/app:pull,push,delete"], ("viewer", "viewer-pw"))
    for headers in (bearer(token), basic("viewer", "viewer-pw")):
        answer = await _call(session, authgw, method, path, headers)
        assert answer.status == 403, (answer.status, answer.body)
        assert answer.code == "DENIED"


@pytest.mark.parametrize(("spec_id", "method", "path", "action"),
                         [e for e in ENDPOINTS if e[3] is not None],
                         ids=[f"{e[0]}-{e[1]}" for e in ENDPOINTS if e[3] is not None])
async def test_other_team(authgw: GatewayProcess, session: aiohttp.ClientSession,
                          spec_id: str, method: str, path: str, action: str) -> None:
    """carol (team-b) reaches nothing of team-a, nor the catalog: 403 DENIED."""
    answer = await _call(session, authgw, method, path, basic("carol", "carol-pw"))
    assert answer.status == 403, (answer.status, answer.body)
    assert method == "HEAD" or answer.code == "DENIED"


async def test_unknown_methods_are_refused_too(authgw: GatewayProcess,
                                               session: aiohttp.ClientSession) -> None:
    for spec_id, _, path, _ in ENDPOINTS:
        answer = await _call(session, authgw, "OPTIONS", path, {})
        assert answer.status in (401, 405), (spec_id, answer.status)
