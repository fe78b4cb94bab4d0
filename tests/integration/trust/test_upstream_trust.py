"""A pull-through upstream that plays the attacker: it may answer anything, but it never gets
the gateway's upstream credentials sent to another host, never has a manifest it cannot back
with its digest served, and never makes the gateway hold an endless manifest in memory.

The hostile upstream and the host it points at (``elsewhere``, reached as ``localhost`` while
the upstream is ``127.0.0.1``: another host name) are small servers in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.pullthrough.upstream import OciUpstream, UpstreamError
from tests.integration.mirror.test_sync import sync_config
from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.hostile import Server

PASSWORD = "upstream-pass-7f3a"
NS = {"ns": "docker.io"}


async def _token(request: web.Request) -> web.StreamResponse:
    return web.json_response({"token": "stolen", "expires_in": 300})


def _config(url: str, tmp_path: Path) -> dict[str, object]:
    password = tmp_path / "upstream-password"
    password.write_text(PASSWORD + "\n")
    return {"mirrors": {"docker.io": {"repository_prefix": "docker-hub", "upstream": {
        "url": url, "username": "puller", "password_file": str(password)}}}}


@contextlib.asynccontextmanager
async def _gateway(upstream: EmulatorProcess, hostile: Server,
                   tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    """A gateway whose docker.io mirror pulls through ``hostile`` with credentials."""
    with GatewayProcess(tmp_path / "gw", _config(hostile.url, tmp_path),
                        upstream_url=upstream.url) as gw:
        yield gw


async def _ecr_images(upstream: EmulatorProcess, repository: str) -> list[object]:
    async with ecr_client(upstream.url) as ecr:
        try:
            found = await ecr.describe_images(repositoryName=repository)
        except ecr.exceptions.RepositoryNotFoundException:
            return []
    return list(found["imageDetails"])


async def _logged(gw: GatewayProcess, text: str) -> bool:
    """Whether ``gw`` logs a line holding ``text`` within 10 seconds."""
    for _ in range(200):
        if any(text in line for line in gw.log_lines):
            return True
        await asyncio.sleep(0.05)
    return False


def _oci_error(status: int, body: bytes) -> dict[str, object]:
    assert 500 <= status < 600 and status != 500, (status, body[:300])
    (error,) = json.loads(body)["errors"]
    assert isinstance(error, dict)
    return error


async def test_attacker_realm_on_another_host_never_gets_the_credentials(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    async with Server(_token) as elsewhere:
        realm = f'Bearer realm="{elsewhere.as_localhost}/token",service="hub"'

        async def challenge(request: web.Request) -> web.StreamResponse:
            return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401,
                                     headers={"WWW-Authenticate": realm})

        async with Server(challenge) as hostile, _gateway(upstream, hostile, tmp_path) as gw:
            async with session.get(f"{gw.url}/v2/library/nginx/manifests/latest",
                                params=NS) as r:
                status, body = r.status, await r.read()
            error = _oci_error(status, body)
            assert error["code"] == "UNAVAILABLE"
            assert elsewhere.seen == [], "the token realm's host was asked"
            assert PASSWORD.encode() not in body
            # The log is read from the process's stderr by a thread: the line may trail.
            assert await _logged(gw, "token realm host localhost")
            assert not any(PASSWORD in line for line in gw.log_lines)


async def test_attacker_redirect_to_another_host_loses_the_authorization(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    async def missing(request: web.Request) -> web.StreamResponse:
        return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)

    async with Server(missing) as elsewhere:
        async def basic_then_redirect(request: web.Request) -> web.StreamResponse:
            if "Authorization" not in request.headers:
                return web.Response(status=401,
                                    headers={"WWW-Authenticate": 'Basic realm="hub"'})
            raise web.HTTPTemporaryRedirect(f"{elsewhere.as_localhost}{request.path}")

        async with Server(basic_then_redirect) as hostile, \
                _gateway(upstream, hostile, tmp_path) as gw:
            async with session.get(f"{gw.url}/v2/library/nginx/manifests/latest",
                                params=NS) as r:
                assert r.status == 404, await r.text()
            assert any(auth for _path, auth in hostile.seen)  # it did get the credentials
            assert elsewhere.seen and all(auth is None for _path, auth in elsewhere.seen), \
                elsewhere.seen


async def test_attacker_manifest_that_does_not_match_a_sha512_reference_is_refused(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    forged = json.dumps({"schemaVersion": 2, "mediaType":
                         "application/vnd.oci.image.index.v1+json", "manifests": []}).encode()
    asked = "sha512:" + hashlib.sha512(b"the manifest the client wants").hexdigest()

    async def anything(request: web.Request) -> web.StreamResponse:
        return web.Response(body=forged, content_type="application/vnd.oci.image.index.v1+json")

    async with Server(anything) as hostile, _gateway(upstream, hostile, tmp_path) as gw:
        async with session.get(f"{gw.url}/v2/library/nginx/manifests/{asked}", params=NS) as r:
            status, body = r.status, await r.read()
        assert forged not in body
        _oci_error(status, body)
        assert hostile.seen, "the upstream was never asked"
    assert await _ecr_images(upstream, "docker-hub/library/nginx") == []


async def test_attacker_endless_manifest_is_cut_off(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    offered = 256 * 1024 * 1024
    sent = [0]

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        await response.prepare(request)  # chunked: no length to refuse up front
        piece = b" " * (1 << 20)
        try:
            while sent[0] < offered:
                await response.write(piece)
                sent[0] += len(piece)
        except ConnectionResetError:
            pass
        return response

    async with Server(endless) as hostile, _gateway(upstream, hostile, tmp_path) as gw:
        async with session.get(f"{gw.url}/v2/library/nginx/manifests/latest", params=NS) as r:
            status, body = r.status, await r.read()
        _oci_error(status, body)
    assert sent[0] < 64 * 1024 * 1024, f"the gateway read {sent[0]} bytes of one manifest"
    assert await _ecr_images(upstream, "docker-hub/library/nginx") == []


async def test_attacker_tag_pages_that_lead_back_end(session: aiohttp.ClientSession) -> None:
    async def looping(request: web.Request) -> web.StreamResponse:
        return web.json_response({"name": "x", "tags": ["v1"]}, headers={
            "Link": '</v2/x/tags/list?n=1000&last=v1>; rel="next"'})

    async with Server(looping) as hostile:
        with pytest.raises(UpstreamError, match="loop"):
            await asyncio.wait_for(OciUpstream(hostile.url, lambda: session).tags("x"), 30)
    assert len(hostile.seen) == 2


class _Swollen:
    """An upstream whose manifest names a 3000-byte layer and which then sends that layer
    endlessly (chunked: no length to refuse up front); ``sent`` counts what it got out."""

    def __init__(self) -> None:
        config_blob = b'{"architecture":"amd64","os":"linux"}'
        self.layer = hashlib.sha256(b"the layer the manifest names").hexdigest()
        self.config_blob = config_blob
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": "sha256:" + hashlib.sha256(config_blob).hexdigest(),
                       "size": len(config_blob)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": f"sha256:{self.layer}", "size": 3000}]}).encode()
        self.offered, self.sent, self.done = 256 * 1024 * 1024, 0, asyncio.Event()

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/tags/list"):
            return web.json_response({"name": "library/nginx", "tags": ["latest"]})
        if "/manifests/" in request.path:
            return web.Response(body=self.manifest,
                                content_type="application/vnd.oci.image.manifest.v1+json")
        if request.path.endswith(self.layer):
            response = web.StreamResponse()
            await response.prepare(request)
            try:
                while self.sent < self.offered:
                    await response.write(b"\0" * (1 << 20))
                    self.sent += 1 << 20
            except ConnectionResetError:
                pass
            finally:
                self.done.set()
            return response
        return web.Response(body=self.config_blob)


async def test_attacker_blob_larger_than_its_manifest_says_is_cut_off(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    swollen = _Swollen()
    async with Server(swollen) as hostile, _gateway(upstream, hostile, tmp_path) as gw:
        async with session.get(f"{gw.url}/v2/library/nginx/manifests/latest", params=NS) as r:
            assert r.status == 200, await r.text()
        await asyncio.wait_for(swollen.done.wait(), 60)  # the copy read what it was going to
        assert swollen.sent < 64 * 1024 * 1024, \
            f"the gateway read {swollen.sent} bytes of a 3000-byte blob"
        assert not any(PASSWORD in line for line in gw.log_lines)
    assert await _ecr_images(upstream, "docker-hub/library/nginx") == []


async def test_attacker_blob_larger_than_its_manifest_says_is_cut_off_by_sync(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    swollen = _Swollen()
    path = sync_config(upstream, tmp_path)
    async with Server(swollen) as hostile:
        sync = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "sync", "--config", str(path),
            f"{hostile.url}/library/nginx:latest", "synced/nginx",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _out, err = await asyncio.wait_for(sync.communicate(), 120)
    assert sync.returncode == 1, (_out.decode(), err.decode())
    assert swollen.sent < 64 * 1024 * 1024, \
        f"sync read {swollen.sent} bytes of a 3000-byte blob"
    assert await _ecr_images(upstream, "synced/nginx") == []
