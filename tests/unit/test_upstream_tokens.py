"""The tokens an upstream client keeps: a scope is a repository name, which clients choose,
so a stream of names the upstream does not hold (Docker Hub's realm hands out an anonymous
token for any of them, then answers 401) must not grow the process without bound; and
concurrent pulls of one name still share one token request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sized

import aiohttp
import pytest
from aiohttp import web

from gateway.pullthrough import upstream as upstream_module
from gateway.pullthrough.upstream import OciUpstream, UpstreamError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Registry:
    """A loopback registry with a token realm: every name is refused once authorized."""

    def __init__(self) -> None:
        self.token_requests = 0
        self.url = ""

    async def v2(self, request: web.Request) -> web.Response:
        if "Authorization" not in request.headers:
            return web.Response(status=401, headers={"WWW-Authenticate":
                                f'Bearer realm="{self.url}/token",service="hub"'})
        return web.Response(status=401)  # a name it does not hold

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        await asyncio.sleep(0.05)  # long enough for concurrent askers to meet
        return web.json_response({"token": "t" * 3000, "expires_in": 300})


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    served = Registry()
    app = web.Application()
    app.router.add_get("/token", served.token)
    app.router.add_route("*", "/v2/{tail:.*}", served.v2)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    served.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield served
    await runner.cleanup()


async def _ask(client: OciUpstream, name: str) -> None:
    with pytest.raises(UpstreamError):
        await client.manifest(name, "latest", (OCI_MANIFEST,))


async def test_tokens_for_many_names_stay_bounded(registry: Registry,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream_module, "AUTH_SCOPES_KEPT", 16, raising=False)
    async with aiohttp.ClientSession() as session:
        client = OciUpstream(registry.url, lambda: session)
        for index in range(200):
            await _ask(client, f"nope/n{index}")
        await client.close()
    assert registry.token_requests == 200
    # Whatever the client keeps per name (tokens, anything else) stays within the bound.
    kept = {name: len(value) for name, value in vars(client).items()
            if isinstance(value, Sized) and not isinstance(value, (str, bytes))}
    assert max(kept.values()) <= 16, kept


async def test_concurrent_pulls_of_one_name_share_one_token_request(
        registry: Registry) -> None:
    async with aiohttp.ClientSession() as session:
        client = OciUpstream(registry.url, lambda: session)
        await asyncio.gather(*(_ask(client, "library/same") for _ in range(8)))
        await client.close()
    assert registry.token_requests == 1
