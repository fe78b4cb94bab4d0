"""Pull through cache against upstreams that distribution's filesystem registry cannot play:
Bearer token authentication (as Docker Hub, GHCR and Quay ask for it), throttling and
server errors. The upstream is a small aiohttp registry on loopback serving one image."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.emulator import EmulatorProcess, ecr_client

USER, TOKEN_SECRET = "robot", "pat-123"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ecr-pullthroughcache/bearer-Xy"
LAYER = os.urandom(4096)
CONFIG = b'{"architecture":"amd64","os":"linux"}'


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


MANIFEST = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(CONFIG),
               "size": len(CONFIG)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(LAYER),
                "size": len(LAYER)}]}).encode()


ENDLESS = 256 * 1024 * 1024  # what an "endless" answer sends if nobody stops reading


class Upstream:
    """``mode``: "ok", "throttle" (429) or "broken" (503) for every manifest request;
    "endless_blob" / "endless_token": blobs / tokens are answered with bytes without end
    (``sent`` counts them); "deep_referrers": the referrers list is nested 100,000 deep;
    "dribble": tokens and manifests arrive a few bytes at a time; "redirect": blobs are a
    307 to ``redirect_to`` (``{digest}`` filled in). ``realm``: the token realm challenges
    name, if not this registry's own."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.redirect_to = ""
        self.realm = ""
        self.sent = 0
        self.tokens_issued = 0
        self.token_requests: list[dict[str, str]] = []
        self.token_asked = 0  # every request to /token, with or without the credential
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self.token)
        app.router.add_get("/v2/", self.guarded(self.base))
        app.router.add_get("/v2/{name:.+}/manifests/{ref}", self.guarded(self.manifest))
        app.router.add_get("/v2/{name:.+}/blobs/{digest}", self.guarded(self.blob))
        app.router.add_get("/v2/{name:.+}/referrers/{digest}", self.guarded(self.referrers))
        app.router.add_get("/storage/{digest}", self.blob)  # a CDN's signed URL: no auth
        return app

    async def base(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def token(self, request: web.Request) -> web.Response:
        self.token_asked += 1
        expected = "Basic " + base64.b64encode(f"{USER}:{TOKEN_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401)
        self.token_requests.append(dict(request.query))
        self.tokens_issued += 1
        if self.mode == "endless_token":
            return await self.endless(request, b'{"token": "')
        if self.mode == "dribble":
            return await self.dribble(request, b'{"token": "bearer-token-1"}')
        return web.json_response({"token": "bearer-token-1"})

    async def dribble(self, request: web.Request, body: bytes,
                      content_type: str = "application/json") -> web.StreamResponse:
        """``body`` a few bytes at a time, as a slow link or TLS records deliver it."""
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        for start in range(0, len(body), 7):
            await response.write(body[start:start + 7])
            await asyncio.sleep(0.002)
        await response.write_eof()
        return response

    async def endless(self, request: web.Request, head: bytes) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to refuse up front
        await response.prepare(request)
        await response.write(head)
        piece = b"a" * (1024 * 1024)
        try:
            while self.sent < ENDLESS:
                await response.write(piece)
                self.sent += len(piece)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass  # the emulator stopped reading
        return response

    def guarded(self, handler: Any) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Authorization") != "Bearer bearer-token-1":
                scope = (f'repository:{request.match_info["name"]}:pull'
                         if "name" in request.match_info else "")
                return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401,
                                         headers={"WWW-Authenticate": (
                                             f'Bearer realm="{self.realm or self.url}/token",'
                                             f'service="upstream.test",scope="{scope}"')})
            return await handler(request)
        return wrapped

    async def manifest(self, request: web.Request) -> web.Response:
        if self.mode == "throttle":
            return web.json_response({"errors": [{"code": "TOOMANYREQUESTS"}]}, status=429)
        if self.mode == "broken":
            return web.Response(status=503)
        if request.match_info["ref"] not in ("v1", sha(MANIFEST)):
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
        if self.mode == "dribble":
            return await self.dribble(request, MANIFEST,
                                      "application/vnd.oci.image.manifest.v1+json")
        return web.Response(body=MANIFEST,
                            content_type="application/vnd.oci.image.manifest.v1+json")

    async def referrers(self, request: web.Request) -> web.Response:
        if self.mode == "deep_referrers":  # json.loads recursed into a RecursionError
            return web.Response(body=b"[" * 100_000 + b"]" * 100_000,
                                content_type="application/vnd.oci.image.index.v1+json")
        return web.Response(body=json.dumps({"schemaVersion": 2, "manifests": []}).encode(),
                            content_type="application/vnd.oci.image.index.v1+json")

    async def blob(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "endless_blob":
            return await self.endless(request, b"")
        if self.mode == "redirect" and request.path.startswith("/v2/"):
            raise web.HTTPTemporaryRedirect(
                self.redirect_to.format(digest=request.match_info["digest"]))
        blobs = {sha(LAYER): LAYER, sha(CONFIG): CONFIG}
        data = blobs.get(request.match_info["digest"])
        return web.Response(body=data) if data else web.Response(status=404)


@pytest.fixture
async def bearer_upstream() -> AsyncIterator[Upstream]:
    upstream = Upstream()
    runner = web.AppRunner(upstream.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    upstream.url = f"http://127.0.0.1:{port}"
    yield upstream
    await runner.cleanup()


async def _rule(ecr: Any, emulator: EmulatorProcess, upstream: Upstream, prefix: str,
                **extra: str) -> None:
    """A pull through cache rule for ``prefix`` onto ``upstream``, with its credential."""
    (emulator.data_dir / "pull-through-secrets.json").write_text(json.dumps(
        {SECRET: {"username": USER, "accessToken": TOKEN_SECRET}}))
    await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=prefix,
                                             upstreamRegistryUrl=upstream.url,
                                             credentialArn=SECRET, **extra)


async def test_bearer_token_flow(ecr: Any, bearer_upstream: Upstream,
                                 model_emulator: EmulatorProcess) -> None:
    prefix = f"bearer{uuid.uuid4().hex[:6]}"
    await _rule(ecr, model_emulator, bearer_upstream, prefix,
                upstreamRegistry="github-container-registry")
    repository = f"{prefix}/org/tool"
    got = await ecr.batch_get_image(repositoryName=repository, imageIds=[{"imageTag": "v1"}])
    assert got["images"][0]["imageManifest"].encode() == MANIFEST
    url = (await ecr.get_download_url_for_layer(repositoryName=repository,
                                                layerDigest=sha(LAYER)))["downloadUrl"]
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert await response.read() == LAYER
    assert bearer_upstream.tokens_issued >= 2  # the manifest's and the layer's
    assert {"service": "upstream.test", "scope": "repository:org/tool:pull"} in (
        bearer_upstream.token_requests)
    valid = await ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix=prefix)
    assert valid["isValid"] is True
    # The credential never shows in an answer.
    described = await ecr.describe_pull_through_cache_rules(ecrRepositoryPrefixes=[prefix])
    assert TOKEN_SECRET not in json.dumps(described, default=str)
    assert TOKEN_SECRET not in model_emulator.log_path.read_text(errors="replace")


@pytest.mark.parametrize(("mode", "code"), [("throttle", "UpstreamTooManyRequests"),
                                            ("broken", "UpstreamUnavailable")])
async def test_throttled_and_broken_upstreams(ecr: Any, bearer_upstream: Upstream,
                                              model_emulator: EmulatorProcess, mode: str,
                                              code: str) -> None:
    prefix = f"bearer{uuid.uuid4().hex[:6]}"
    await _rule(ecr, model_emulator, bearer_upstream, prefix)
    bearer_upstream.mode = mode
    got = await ecr.batch_get_image(repositoryName=f"{prefix}/org/tool",
                                    imageIds=[{"imageTag": "v1"}])
    assert got["images"] == []
    assert got["failures"] == [{"imageId": {"imageTag": "v1"}, "failureCode": code,
                                "failureReason": got["failures"][0]["failureReason"]}]


@pytest.mark.parametrize("mode", ["endless_blob", "endless_token"])
async def test_endless_upstream_answers_are_cut_short(bearer_upstream: Upstream,
                                                      tmp_path: Path, mode: str) -> None:
    """A blob is read up to its descriptor's size and a token up to 4 MiB: an upstream
    sending without end fills neither the disk nor the memory."""
    # An emulator of its own: the shared one may hold the layer already.
    with EmulatorProcess(tmp_path / "ecr") as emulator:
        async with ecr_client(emulator.url, retries={"total_max_attempts": 1}) as ecr:
            await _rule(ecr, emulator, bearer_upstream, "endless")
            got = await ecr.batch_get_image(repositoryName="endless/org/tool",
                                            imageIds=[{"imageTag": "v1"}])
            assert got["failures"] == []
            bearer_upstream.mode = mode
            with pytest.raises(ecr.exceptions.UnableToGetUpstreamLayerException):
                await ecr.get_download_url_for_layer(repositoryName="endless/org/tool",
                                                     layerDigest=sha(LAYER))
    assert bearer_upstream.sent < 32 * 1024 * 1024


async def test_redirects_and_realms_into_private_networks_are_refused(
        bearer_upstream: Upstream, tmp_path: Path) -> None:
    """As ECR's pull through cache reaches its upstreams over the internet: a blob's redirect
    or a token realm on a private or metadata address is refused before any connection (the
    emulator's connect timeout is 10 s: the answer comes within 5). An upstream on loopback
    (this test's) may still redirect to loopback under another host name."""
    with EmulatorProcess(tmp_path / "ecr") as emulator:  # the shared one may hold the layer
        async with ecr_client(emulator.url, retries={"total_max_attempts": 1}) as ecr:
            await _rule(ecr, emulator, bearer_upstream, "vpc")
            got = await ecr.batch_get_image(repositoryName="vpc/org/tool",
                                            imageIds=[{"imageTag": "v1"}])
            assert got["failures"] == []
            bearer_upstream.mode = "redirect"
            for target in ("https://10.1.2.3/storage/{digest}?X-Amz-Signature=sig-5e1f",
                           "https://100.100.100.200/latest/meta-data/",
                           "https://[fd00:ec2::254]/latest/meta-data/",
                           "http://cdn.example/storage/{digest}"):
                bearer_upstream.redirect_to = target
                async with asyncio.timeout(5):
                    with pytest.raises(ecr.exceptions.UnableToGetUpstreamLayerException) as no:
                        await ecr.get_download_url_for_layer(repositoryName="vpc/org/tool",
                                                             layerDigest=sha(LAYER))
                message = no.value.response["Error"]["Message"]
                assert "a redirect to" in message and "(not followed)" in message, message
                assert "sig-5e1f" not in message
            bearer_upstream.redirect_to = (bearer_upstream.url.replace("127.0.0.1", "localhost")
                                           + "/storage/{digest}")
            url = (await ecr.get_download_url_for_layer(
                repositoryName="vpc/org/tool", layerDigest=sha(LAYER)))["downloadUrl"]
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                assert await response.read() == LAYER

            bearer_upstream.mode, bearer_upstream.realm = "ok", "https://10.1.2.3"
            async with asyncio.timeout(5):
                got = await ecr.batch_get_image(repositoryName="vpc/org/other",
                                                imageIds=[{"imageTag": "v1"}])
            (failure,) = got["failures"]
            assert failure["failureCode"] == "UpstreamUnavailable", failure
            # Refused for its host before its address is looked at.
            assert "a token realm on another host, 10.1.2.3 (not asked)" in (
                failure["failureReason"]), failure


async def test_a_token_realm_on_another_host_is_never_asked(
        bearer_upstream: Upstream, tmp_path: Path) -> None:
    """As the gateway's pull-through: a challenge naming a realm on another host than the
    upstream's (here ``localhost`` for an upstream on ``127.0.0.1``, the same server, so
    every address check passes) gets neither the rule's credential nor a request. Before, the
    emulator sent the credential to any realm host on an allowed address."""
    with EmulatorProcess(tmp_path / "ecr") as emulator:  # the shared one may hold the image
        async with ecr_client(emulator.url, retries={"total_max_attempts": 1}) as ecr:
            await _rule(ecr, emulator, bearer_upstream, "elsewhere")
            bearer_upstream.realm = bearer_upstream.url.replace("127.0.0.1", "localhost")
            got = await ecr.batch_get_image(repositoryName="elsewhere/org/tool",
                                            imageIds=[{"imageTag": "v1"}])
            assert bearer_upstream.token_asked == 0, "the credential went to localhost"
            (failure,) = got["failures"]
            assert failure["failureCode"] == "UpstreamUnavailable", failure
            assert failure["failureReason"].endswith(
                "a token realm on another host, localhost (not asked)"), failure
            assert bearer_upstream.token_asked == 0
            # Its own host's realm is asked as before.
            bearer_upstream.realm = ""
            got = await ecr.batch_get_image(repositoryName="elsewhere/org/tool",
                                            imageIds=[{"imageTag": "v1"}])
            assert got["failures"] == [], got["failures"]
            assert bearer_upstream.token_asked == 1
    assert TOKEN_SECRET not in emulator.log_path.read_text(errors="replace")


async def test_deeply_nested_upstream_referrers_are_refused(
        ecr: Any, bearer_upstream: Upstream, model_emulator: EmulatorProcess) -> None:
    prefix = f"deep{uuid.uuid4().hex[:6]}"
    await _rule(ecr, model_emulator, bearer_upstream, prefix)
    repository = f"{prefix}/org/tool"
    got = await ecr.batch_get_image(repositoryName=repository, imageIds=[{"imageTag": "v1"}])
    assert got["failures"] == []
    bearer_upstream.mode = "deep_referrers"
    with pytest.raises(ecr.exceptions.UnableToListUpstreamImageReferrersException):
        await ecr.list_image_referrers(repositoryName=repository,
                                       subjectId={"imageDigest": sha(MANIFEST)})


async def test_answers_arriving_in_pieces_are_read_whole(
        ecr: Any, bearer_upstream: Upstream, model_emulator: EmulatorProcess) -> None:
    """A token and a manifest that reach the emulator in many small pieces (a slow link, TLS
    records) are read to their end (before: only what had arrived at the first read, so the
    token was not JSON and the manifest did not match its digest)."""
    prefix = f"dribble{uuid.uuid4().hex[:6]}"
    await _rule(ecr, model_emulator, bearer_upstream, prefix)
    bearer_upstream.mode = "dribble"
    got = await ecr.batch_get_image(repositoryName=f"{prefix}/org/tool",
                                    imageIds=[{"imageTag": "v1"}])
    assert got["failures"] == [], got["failures"]
    assert got["images"][0]["imageManifest"].encode() == MANIFEST


async def test_a_failed_redirect_hop_never_names_its_signed_url(
        bearer_upstream: Upstream, tmp_path: Path) -> None:
    """A blob's redirect to a CDN carries the CDN's signature in its query, a credential for
    the URL's lifetime. A hop that fails (here a malformed answer, which aiohttp reports with
    the whole URL it asked) is told by its kind alone: before, the signed URL reached the
    UnableToGetUpstreamLayerException message, an error body the caller (and the gateway,
    passing ECR's messages on to its clients) sees."""
    async def malformed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n")
            await writer.drain()
        writer.close()

    cdn = await asyncio.start_server(malformed, "127.0.0.1", 0)
    port = cdn.sockets[0].getsockname()[1]
    try:
        with EmulatorProcess(tmp_path / "ecr") as emulator:  # the shared one may hold it
            async with ecr_client(emulator.url, retries={"total_max_attempts": 1}) as ecr:
                await _rule(ecr, emulator, bearer_upstream, "cdn")
                got = await ecr.batch_get_image(repositoryName="cdn/org/tool",
                                                imageIds=[{"imageTag": "v1"}])
                assert got["failures"] == []
                bearer_upstream.mode = "redirect"
                bearer_upstream.redirect_to = (
                    f"http://localhost:{port}/storage/{{digest}}?X-Amz-Credential=cred-7a2b"
                    "&X-Amz-Signature=sig-5e1f&Signature=sig-9c3d&Key-Pair-Id=kp-4d8e")
                with pytest.raises(ecr.exceptions.UnableToGetUpstreamLayerException) as no:
                    await ecr.get_download_url_for_layer(repositoryName="cdn/org/tool",
                                                         layerDigest=sha(LAYER))
        message = no.value.response["Error"]["Message"]
        assert "could not be fetched from the upstream registry" in message, message
        for secret in ("cred-7a2b", "sig-5e1f", "sig-9c3d", "kp-4d8e", "/storage/"):
            assert secret not in message, message
        logged = emulator.log_path.read_text(errors="replace")
        for secret in ("cred-7a2b", "sig-5e1f", "sig-9c3d", "kp-4d8e"):
            assert secret not in logged
    finally:
        cdn.close()
        await cdn.wait_closed()
