"""ECR Public routes against an attacker: a registry endpoint that names a token realm on
another host never gets the gateway's ECR Public password sent there, and what a failed pull
answers never names the account.

The hostile endpoint and the host it points at (``elsewhere``, reached as ``localhost`` while
the endpoint is ``127.0.0.1``: another host name) are small servers in this process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.pullthrough.upstream import MAX_MANIFEST_BYTES
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.hostile import Server, challenging

OTHER_ACCOUNT = "210987654321"  # a registry whose alias the gateway's identity cannot read


async def _token(request: web.Request) -> web.StreamResponse:
    return web.json_response({"token": "stolen", "expires_in": 300})


async def test_a_realm_on_another_host_never_gets_the_ecr_public_password(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """The Basic password of ECR Public's GetAuthorizationToken pushes to the account's
    public registry: a challenge naming another host's realm is refused, not followed."""
    async with Server(_token) as elsewhere:
        realm = f'Bearer realm="{elsewhere.as_localhost}/token",service="public.ecr.aws"'
        async with Server(challenging(realm)) as hostile:
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


def _token_flow(request: web.Request) -> web.Response | None:
    """The endpoint's answers to the token flow (its own host's realm); None for the rest."""
    if request.path == "/v2/":
        return web.Response(status=401, headers={
            "WWW-Authenticate": f'Bearer realm="http://{request.host}/token"'})
    if request.path == "/token":
        return web.json_response({"token": "t", "expires_in": 300})
    return None


def _endless_endpoint(pages: list[int]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A registry endpoint whose tag pages never end (each names a next one) and whose
    manifests are larger than any manifest ECR holds."""

    async def handler(request: web.Request) -> web.StreamResponse:
        auth = _token_flow(request)
        if auth is not None:
            return auth
        if request.path.endswith("/tags/list"):
            pages.append(len(pages))
            page = len(pages)
            return web.json_response(
                {"tags": [f"t{page}-{i}" for i in range(1000)]},
                headers={"Link": f'</v2/alias/app/tags/list?last=t{page}&n=1000>; rel="next"'})
        if "/manifests/" in request.path:
            return web.Response(body=b" " * (MAX_MANIFEST_BYTES + 1),
                                content_type="application/vnd.oci.image.manifest.v1+json")
        return web.Response(status=404)

    return handler


async def test_an_endpoint_whose_answers_never_end_is_cut_off(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """A route's registry_url may name any host: its tag pages are bounded as a pull-through
    upstream's (1000 pages, 100,000 tags; not held in memory for ever) and its manifests at
    ECR's 4 MiB, never read whole and served."""
    pages: list[int] = []
    async with Server(_endless_endpoint(pages)) as hostile:
        config = {"routes": [{"prefix": "pub", "upstream_kind": "ecr-public",
                              "registry_alias": "alias", "registry_url": hostile.url}]}
        with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{gw.url}/v2/pub/app/manifests/v1") as r:
                    status, body = r.status, await r.read()
                assert status == 502, (status, len(body))
                assert len(body) < 4096
                try:
                    async with asyncio.timeout(60), session.get(
                            f"{gw.url}/v2/pub/app/tags/list") as r:
                        status = r.status
                except TimeoutError:
                    status = 0
                assert status == 502, f"{status} after {len(pages)} pages"
                assert len(pages) <= 1000


async def _dribbling_manifests(request: web.Request) -> web.StreamResponse:
    """A registry endpoint that sends each manifest a byte just inside the read timeout."""
    auth = _token_flow(request)
    if auth is not None:
        return auth
    response = web.StreamResponse(headers={
        "Content-Type": "application/vnd.oci.image.manifest.v1+json", "Content-Length": "600"})
    await response.prepare(request)
    for _ in range(600):
        await response.write(b" ")
        await asyncio.sleep(0.5)
    return response


async def test_an_endpoint_that_dribbles_an_answer_is_cut_off_at_the_deadline(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """A byte just inside each read timeout (1 s here) holds no request for ever: a whole
    answer gets four read timeouts, then the client hears 503."""
    async with Server(_dribbling_manifests) as hostile:
        config = {"routes": [{"prefix": "pub", "upstream_kind": "ecr-public",
                              "registry_alias": "alias", "registry_url": hostile.url}],
                  "upstream": {"http_read_timeout_seconds": 1.0}}
        with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
            async with aiohttp.ClientSession() as session:
                started = asyncio.get_running_loop().time()
                async with asyncio.timeout(60), session.get(
                        f"{gw.url}/v2/pub/app/manifests/v1") as r:
                    status, text = r.status, await r.text()
                took = asyncio.get_running_loop().time() - started
    assert status == 503 and "UNAVAILABLE" in text, (status, text)
    assert took < 15, took
