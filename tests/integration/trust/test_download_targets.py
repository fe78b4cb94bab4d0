"""Blob download URLs against an attacker, in proxy mode: an ECR endpoint (here a relay in
front of the emulator that rewrites GetDownloadUrlForLayer's answers) or an ECR Public
registry endpoint (a small server) that hands out a download URL, or a redirect from one,
pointing into the gateway's network. The gateway fetches such URLs only over https to
globally routable addresses, or on a configured endpoint's own origin: anything else is a
clear 502 and never a connection, which listening sockets that count their connections
(on 127.0.0.1 and 127.0.0.2) show."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.hostile import Listener, Server

SIGNATURE = "X-Amz-Signature=sig-5e1f"
_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "content-encoding"}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Relay:
    """The gateway's ECR endpoint: every request goes on to the emulator as it came (its
    signature holds), GetDownloadUrlForLayer's ``downloadUrl`` replaced by ``rewrite``'s;
    ``/bounce`` redirects to ``bounce_to``."""

    def __init__(self, emulator: str) -> None:
        self.emulator = emulator
        self.rewrite: Callable[[str], str] = lambda url: url
        self.bounce_to = ""
        self.url = ""
        self._server = Server(self._handle, client_max_size=64 * 1024 * 1024)
        self._session: aiohttp.ClientSession | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/bounce":
            raise web.HTTPTemporaryRedirect(self.bounce_to)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(request.method, self.emulator + request.path_qs,
                                         headers=headers, data=await request.read(),
                                         allow_redirects=False) as answer:
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
            if answer.status == 200 and request.headers.get(
                    "X-Amz-Target", "").endswith(".GetDownloadUrlForLayer"):
                document = json.loads(body)
                document["downloadUrl"] = self.rewrite(document["downloadUrl"])
                body = json.dumps(document).encode()
            return web.Response(status=answer.status, body=body, headers=kept)

    async def __aenter__(self) -> Relay:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self.url = (await self._server.__aenter__()).url
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None
        await self._server.__aexit__(*exc)
        await self._session.close()


async def _push(emulator: str, repository: str, layer: bytes) -> None:
    """An image holding ``layer``, pushed with ECR's own API (nothing staged at the gateway,
    so its reads take the download URL)."""
    config = b'{"architecture":"amd64","os":"linux"}'
    async with ecr_client(emulator) as ecr:
        await ecr.create_repository(repositoryName=repository)
        for blob in (layer, config):
            upload = await ecr.initiate_layer_upload(repositoryName=repository)
            await ecr.upload_layer_part(repositoryName=repository, uploadId=upload["uploadId"],
                                        partFirstByte=0, partLastByte=len(blob) - 1,
                                        layerPartBlob=blob)
            await ecr.complete_layer_upload(repositoryName=repository,
                                            uploadId=upload["uploadId"],
                                            layerDigests=[sha(blob)])
        manifest = {"schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": sha(config), "size": len(config)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                "digest": sha(layer), "size": len(layer)}]}
        await ecr.put_image(repositoryName=repository, imageTag="v1",
                            imageManifest=json.dumps(manifest),
                            imageManifestMediaType=manifest["mediaType"])


@pytest.fixture
async def listeners() -> AsyncIterator[tuple[Listener, Listener]]:
    async with Listener("127.0.0.1") as here, Listener("127.0.0.2") as other:
        yield here, other


async def _refused(session: aiohttp.ClientSession, url: str,
                   listeners: tuple[Listener, Listener]) -> dict[str, Any]:
    # Refused before any connection: well within the gateway's 10 s connect timeout.
    async with asyncio.timeout(5), session.get(url) as r:
        status, text = r.status, await r.text()
    assert [listener.connections for listener in listeners] == [0, 0], "connected"
    assert status == 502, (status, text)
    body = json.loads(text)
    (error,) = body["errors"]
    assert error["code"] == "UNKNOWN"
    assert "download URL not followed" in error["message"], error
    assert "sig-5e1f" not in json.dumps(body)
    return error


async def test_an_ecr_download_url_into_the_network_is_never_fetched(
        upstream: EmulatorProcess, listeners: tuple[Listener, Listener], tmp_path: Path,
        repo: str, session: aiohttp.ClientSession) -> None:
    here, other = listeners
    layer = os.urandom(3000)
    await _push(upstream.url, repo, layer)
    async with Relay(upstream.url) as relay:
        gateway = GatewayProcess(tmp_path / "gw", {
            "blobs": {"mode": "proxy"}, "cache": {"download_url_ttl_seconds": 0}},
            upstream_url=upstream.url)
        gateway.config["upstream"]["endpoint_url"] = relay.url
        with gateway:
            blob = f"{gateway.url}/v2/{repo}/blobs/{sha(layer)}"
            # The configured endpoint's own origin (loopback here) is where its URLs lead.
            async with session.get(blob) as r:
                assert r.status == 200 and await r.read() == layer

            for target, why in (
                    (f"http://127.0.0.2:{other.port}/blob?{SIGNATURE}", "plain http"),
                    (f"https://127.0.0.2:{other.port}/blob?{SIGNATURE}", "internal address"),
                    (f"https://localhost:{here.port}/blob?{SIGNATURE}", "internal address"),
                    (f"https://10.1.2.3/blob?{SIGNATURE}", "private address"),
                    ("https://169.254.169.254/latest/meta-data/", "internal address"),
                    (f"{relay.url.replace('127.0.0.1', 'localhost')}/x", "plain http")):
                relay.rewrite = lambda url, target=target: target
                error = await _refused(session, blob, listeners)
                assert why in error["message"], (target, error)
            # A URL on the endpoint's origin that redirects elsewhere: the hop is not made.
            relay.rewrite = lambda url: f"{relay.url}/bounce?{SIGNATURE}"
            relay.bounce_to = f"https://127.0.0.2:{other.port}/blob"
            error = await _refused(session, blob, listeners)
            assert "a redirect from the download URL" in error["message"], error
            # A mount's server-side copy reads the source the same way: refused, it falls
            # back to an ordinary upload.
            relay.rewrite = lambda url: f"http://127.0.0.2:{other.port}/blob?{SIGNATURE}"
            asked = len(upstream.requests("GetDownloadUrlForLayer"))
            async with session.post(f"{gateway.url}/v2/{repo}-copy/blobs/uploads/",
                                    params={"mount": sha(layer), "from": repo}) as r:
                assert other.connections == 0, "connected"
                assert r.status == 202, (r.status, await r.text())
            assert len(upstream.requests("GetDownloadUrlForLayer")) > asked  # it tried
        assert (here.connections, other.connections) == (0, 0)
        assert await gateway.logged("blob download from 127.0.0.2 refused")
        assert "sig-5e1f" not in "\n".join(gateway.log_lines)


async def test_an_ecr_public_blob_redirect_into_the_network_is_never_fetched(
        upstream: EmulatorProcess, listeners: tuple[Listener, Listener], tmp_path: Path,
        session: aiohttp.ClientSession) -> None:
    here, other = listeners
    layer = os.urandom(2000)
    locations = {"to": ""}

    async def registry(request: web.Request) -> web.StreamResponse:
        if request.path == "/token":
            return web.json_response({"token": "t", "expires_in": 300})
        if request.path == "/storage/blob":
            return web.Response(body=layer)
        if request.path == "/bounce":
            raise web.HTTPTemporaryRedirect(f"https://127.0.0.2:{other.port}/blob")
        if request.path.startswith("/v2/alias/app/blobs/"):
            raise web.HTTPTemporaryRedirect(locations["to"])
        return web.json_response({})

    async with Server(registry) as hostile:
        config = {"blobs": {"mode": "proxy"}, "cache": {"download_url_ttl_seconds": 0},
                  "routes": [{"prefix": "pub", "upstream_kind": "ecr-public",
                              "registry_alias": "alias", "registry_url": hostile.url}]}
        with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gateway:
            blob = f"{gateway.url}/v2/pub/app/blobs/{sha(layer)}"
            locations["to"] = f"{hostile.url}/storage/blob"  # the registry's own origin
            async with session.get(blob) as r:
                assert r.status == 200 and await r.read() == layer
            for target in (f"http://127.0.0.2:{other.port}/blob?{SIGNATURE}",
                           f"https://localhost:{here.port}/blob?{SIGNATURE}",
                           "https://169.254.169.254/latest/meta-data/",
                           f"{hostile.url}/bounce"):
                locations["to"] = target
                await _refused(session, blob, listeners)
    assert (here.connections, other.connections) == (0, 0)


async def test_blob_storage_out_of_reach_is_a_503_to_retry(
        upstream: EmulatorProcess, tmp_path: Path, repo: str,
        session: aiohttp.ClientSession) -> None:
    """A download URL the gateway may follow (a configured endpoint's origin) whose host
    does not answer: storage is down, not the client wrong: 503 with Retry-After, no URL."""
    layer = os.urandom(2500)
    await _push(upstream.url, repo, layer)
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{closed.getsockname()[1]}"
    async with Relay(upstream.url) as relay:
        relay.rewrite = lambda url: f"{gone}/blob?{SIGNATURE}"
        gateway = GatewayProcess(tmp_path / "gw", {
            "blobs": {"mode": "proxy"}, "cache": {"download_url_ttl_seconds": 0}},
            upstream_url=upstream.url)
        gateway.config["upstream"]["endpoint_url"] = relay.url
        gateway.config["upstream"]["public_endpoint_url"] = gone
        with gateway:
            async with session.get(f"{gateway.url}/v2/{repo}/blobs/{sha(layer)}") as r:
                status, text, retry = r.status, await r.text(), r.headers.get("Retry-After")
    assert (status, retry) == (503, "1"), (status, text)
    (error,) = json.loads(text)["errors"]
    assert error["code"] == "UNAVAILABLE", error
    assert "sig-5e1f" not in text
