"""ECR Public routes against an attacker: a registry endpoint that names a token realm on
another host never gets the gateway's ECR Public password sent there, and what a failed pull
answers never names the account.

The hostile endpoint and the host it points at (``elsewhere``, reached as ``localhost`` while
the endpoint is ``127.0.0.1``: another host name) are small servers in this process.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.hostile import Server

OTHER_ACCOUNT = "210987654321"  # a registry whose alias the gateway's identity cannot read


async def _token(request: web.Request) -> web.StreamResponse:
    return web.json_response({"token": "stolen", "expires_in": 300})


async def test_a_realm_on_another_host_never_gets_the_ecr_public_password(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """The Basic password of ECR Public's GetAuthorizationToken pushes to the account's
    public registry: a challenge naming another host's realm is refused, not followed."""
    async with Server(_token) as elsewhere:
        realm = f'Bearer realm="{elsewhere.as_localhost}/token",service="public.ecr.aws"'

        async def challenge(request: web.Request) -> web.StreamResponse:
            return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401,
                                     headers={"WWW-Authenticate": realm})

        async with Server(challenge) as hostile:
            config = {"routes": [{"prefix": "pub", "upstream_kind": "ecr-public",
                                  "registry_alias": "alias", "registry_url": hostile.url}]}
            with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
                async with aiohttp.ClientSession() as session, session.get(
                        f"{gw.url}/v2/pub/app/manifests/v1") as r:
                    status, body = r.status, await r.json()
                assert elsewhere.seen == [], "the realm on another host was asked"
                assert status == 503 and r.headers["Retry-After"]
                assert body["errors"][0]["code"] == "UNAVAILABLE"
                assert "token realm on another host" in body["errors"][0]["message"]
                assert await gw.logged("token realm host localhost")
                sent = [auth for _, auth in hostile.seen if auth]
                assert not any(a.startswith("Basic ") for a in sent), sent


async def test_a_registry_without_an_alias_is_not_named_to_clients(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """A route's registry id is an account id: the error of a registry whose alias the
    gateway cannot learn does not carry it."""
    config = {"routes": [{"prefix": "other", "upstream_kind": "ecr-public",
                          "registry_id": OTHER_ACCOUNT, "registry_url": upstream.url}]}
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
        async with aiohttp.ClientSession() as session, session.get(
                f"{gw.url}/v2/other/app/manifests/v1") as r:
            status, text = r.status, await r.text()
    assert status == 404 and "NAME_UNKNOWN" in text
    assert OTHER_ACCOUNT not in text, text
