"""Cold pulls as an attacker uses them: any caller allowed to pull from a mirror can ask for
images ECR does not hold, and each cold blob is spooled to the gateway's disk while it is
copied into ECR. The spools in flight never take more than
``blobs.staging.pullthrough_max_bytes``: a blob that does not fit is refused with a 503 and
Retry-After before the upstream is asked for it, and a blob of unknown size is cut off
where the budget ends. Nor does a cold pull of a name the upstream does not hold create an
ECR repository.

The upstream is a small server in this process that can hold a layer's transfer open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.hostile import Handler, Server

MiB = 1024 * 1024
BUDGET = 64 * MiB
NS = {"ns": "docker.io"}
CONFIG_BLOB = b'{"architecture":"amd64","os":"linux"}'


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Upstream:
    """Two images, each with one 40 MiB layer; ``a``'s layer stops after its first MiB
    until ``release`` is set. Every endless blob is sent without a length."""

    def __init__(self) -> None:
        self.layers = {name: bytes([index]) * 40 * MiB for index, name in enumerate("ab")}
        self.release = asyncio.Event()
        self.endless = _digest(b"a layer nobody has")
        self.endless_sent = 0

    def manifest(self, name: str) -> bytes:
        return json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": _digest(CONFIG_BLOB), "size": len(CONFIG_BLOB)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": _digest(self.layers[name]),
                        "size": len(self.layers[name])}]}).encode()

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        match = re.fullmatch(r"/v2/library/(\w)/manifests/v1", request.path)
        if match:
            return web.Response(body=self.manifest(match[1]),
                                content_type="application/vnd.oci.image.manifest.v1+json")
        if request.path.endswith(self.endless):
            response = web.StreamResponse()
            await response.prepare(request)
            try:
                while self.endless_sent < 256 * MiB:
                    await response.write(b"\0" * MiB)
                    self.endless_sent += MiB
            except ConnectionResetError:
                pass
            return response
        for name, layer in self.layers.items():
            if request.path.endswith(_digest(layer)):
                response = web.StreamResponse(headers={"Content-Length": str(len(layer))})
                await response.prepare(request)
                await response.write(layer[:MiB])
                if name == "a":
                    await self.release.wait()
                await response.write(layer[MiB:])
                return response
        return web.Response(body=CONFIG_BLOB)


def _config(url: str) -> dict[str, object]:
    return {"mirrors": {"docker.io": {"repository_prefix": "docker-hub",
                                      "upstream": {"url": url}}},
            "blobs": {"staging": {"pullthrough_max_bytes": BUDGET}}}


@contextlib.asynccontextmanager
async def _gateway(handler: Handler, upstream: EmulatorProcess,
                   tmp_path: Path) -> AsyncIterator[tuple[Server, GatewayProcess]]:
    """A gateway whose docker.io mirror pulls through ``handler``, with a 64 MiB spool."""
    async with Server(handler) as source:
        with GatewayProcess(tmp_path / "gw", _config(source.url),
                            upstream_url=upstream.url) as gw:
            yield source, gw


async def _spool_bytes(session: aiohttp.ClientSession, gw: GatewayProcess) -> float:
    async with session.get(f"{gw.url}/metrics") as r:
        text = await r.text()
    match = re.search(r"^ecr_gateway_pullthrough_spool_bytes (\S+)$", text, re.M)
    assert match, "no spool gauge in /metrics"
    return float(match[1])


async def test_cold_pulls_beyond_the_spool_budget_are_refused_before_the_upstream_is_asked(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    source = _Upstream()
    async with _gateway(source, upstream, tmp_path) as (hostile, gw):
        async with session.get(f"{gw.url}/v2/library/a/manifests/v1", params=NS) as r:
            assert r.status == 200, await r.text()
        layer_a, layer_b = (_digest(source.layers[n]) for n in "ab")
        for _ in range(200):  # a's layer is being copied (and held open upstream)
            if any(path.endswith(layer_a) for path, _ in hostile.seen):
                break
            await asyncio.sleep(0.05)
        assert await _spool_bytes(session, gw) >= 40 * MiB

        async with session.get(f"{gw.url}/v2/library/b/manifests/v1", params=NS) as r:
            assert r.status == 200, await r.text()
        async with session.get(f"{gw.url}/v2/library/b/blobs/{layer_b}", params=NS) as r:
            body = await r.read()
            assert r.status == 503, (r.status, body[:300])
            assert r.headers.get("Retry-After") == "10"
            (error,) = json.loads(body)["errors"]
            assert error["code"] == "UNAVAILABLE"
            assert error["detail"]["spool_max_bytes"] == BUDGET
        assert not any(path.endswith(layer_b) for path, _ in hostile.seen), \
            "the upstream was asked for a blob the spool had no room for"
        assert await _spool_bytes(session, gw) <= BUDGET

        source.release.set()  # a's copy ends and gives its share back
        for _ in range(400):
            if await _spool_bytes(session, gw) == 0:
                break
            await asyncio.sleep(0.05)
        async with session.get(f"{gw.url}/v2/library/b/blobs/{layer_b}", params=NS) as r:
            assert r.status == 200, await r.text()
            assert await r.read() == source.layers["b"]


async def test_a_blob_of_unknown_size_is_cut_off_where_the_budget_ends(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    source = _Upstream()
    async with _gateway(source, upstream, tmp_path) as (_, gw):
        # Asked for by digest with no manifest before it: neither the gateway nor the
        # upstream's answer (chunked) says how large it is.
        async with session.get(f"{gw.url}/v2/library/a/blobs/{source.endless}",
                               params=NS) as r:
            with_body = r.status
            try:
                await r.read()
            except aiohttp.ClientPayloadError:
                pass  # the transfer broke off: what a client must see
        assert with_body in (200, 503)
        for _ in range(200):
            if await _spool_bytes(session, gw) == 0:
                break
            await asyncio.sleep(0.05)
        assert await _spool_bytes(session, gw) == 0
    assert source.endless_sent < BUDGET + 32 * MiB, \
        f"the gateway read {source.endless_sent // MiB} MiB of a blob of unknown size"


async def _not_held(request: web.Request) -> web.StreamResponse:
    return web.json_response({"errors": [{"code": "BLOB_UNKNOWN", "message": "no"}]},
                             status=404)


async def _error_page(request: web.Request) -> web.StreamResponse:
    """A proxy or portal in front of the upstream: 200 with a page of its own."""
    return web.Response(body=b"<html><body>Sign in to continue</body></html>",
                        content_type="text/html")


@pytest.mark.parametrize("answer", [_not_held, _error_page])
async def test_names_the_upstream_does_not_hold_create_no_ecr_repository(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path,
        answer: Handler) -> None:
    """ECR's repositories are a quota of the whole account (10,000 by default): a caller
    asking for blobs under made-up names must not create one per name, whether the upstream
    says it has no such blob or answers with bytes that are not the blob."""
    async with _gateway(answer, upstream, tmp_path) as (_, gw):
        for index in range(3):
            async with session.get(f"{gw.url}/v2/made-up/name{index}/blobs/"
                                   f"{_digest(b'x%d' % index)}", params=NS) as r:
                try:
                    body, whole = await r.read(), True
                except aiohttp.ClientPayloadError:  # streamed as it came, then broken off
                    body, whole = b"", False
            if answer is _not_held:
                assert r.status == 404, (r.status, body[:300])
                assert json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"
            else:
                assert not (r.status == 200 and whole), "the page was served as the blob"
        await asyncio.sleep(1)  # the copies that failed are over
    async with ecr_client(upstream.url) as ecr:
        found = await ecr.describe_repositories()
    names = [repository["repositoryName"] for repository in found["repositories"]]
    assert not [name for name in names if "made-up" in name], names
