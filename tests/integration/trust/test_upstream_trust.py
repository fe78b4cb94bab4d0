"""A pull-through upstream that plays the attacker: it may answer anything, but it never gets
the gateway's upstream credentials sent to another host, never has a manifest it cannot back
with its digest served, and never makes the gateway hold an endless manifest in memory.

The hostile upstream and the host it points at (``elsewhere``, reached as ``localhost`` while
the upstream is ``127.0.0.1``: another host name) are small servers in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import socket
import ssl
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from gateway.pullthrough.upstream import OciUpstream, UpstreamError
from tests.integration.mirror.test_sync import sync_config
from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.hostile import Listener, Server, challenging
from tests.support.processes import peak_rss

PASSWORD = "upstream-pass-7f3a"
NS = {"ns": "docker.io"}
MiB = 1024 * 1024


async def _token(request: web.Request) -> web.StreamResponse:
    return web.json_response({"token": "stolen", "expires_in": 300})


def _config(url: str, tmp_path: Path, **settings: object) -> dict[str, object]:
    password = tmp_path / "upstream-password"
    password.write_text(PASSWORD + "\n")
    return {"mirrors": {"docker.io": {"repository_prefix": "docker-hub", "upstream": {
        "url": url, "username": "puller", "password_file": str(password), **settings}}}}


@contextlib.asynccontextmanager
async def _gateway(upstream: EmulatorProcess, hostile: Server, tmp_path: Path,
                   **settings: object) -> AsyncIterator[GatewayProcess]:
    """A gateway whose docker.io mirror pulls through ``hostile`` with credentials."""
    with GatewayProcess(tmp_path / "gw", _config(hostile.url, tmp_path, **settings),
                        upstream_url=upstream.url) as gw:
        yield gw


async def _ecr_images(upstream: EmulatorProcess, repository: str) -> list[object]:
    async with ecr_client(upstream.url) as ecr:
        try:
            found = await ecr.describe_images(repositoryName=repository)
        except ecr.exceptions.RepositoryNotFoundException:
            return []
    return list(found["imageDetails"])


def _oci_error(status: int, body: bytes) -> dict[str, object]:
    assert 500 <= status < 600 and status != 500, (status, body[:300])
    (error,) = json.loads(body)["errors"]
    assert isinstance(error, dict)
    return error


async def test_attacker_realm_on_another_host_never_gets_the_credentials(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    async with Server(_token) as elsewhere:
        realm = f'Bearer realm="{elsewhere.as_localhost}/token",service="hub"'
        async with Server(challenging(realm)) as hostile, \
                _gateway(upstream, hostile, tmp_path) as gw:
            async with session.get(f"{gw.url}/v2/library/nginx/manifests/latest",
                                params=NS) as r:
                status, body = r.status, await r.read()
            error = _oci_error(status, body)
            assert error["code"] == "UNAVAILABLE"
            assert elsewhere.seen == [], "the token realm's host was asked"
            assert PASSWORD.encode() not in body
            # The log is read from the process's stderr by a thread: the line may trail.
            assert await gw.logged("token realm host localhost")
            assert not any(PASSWORD in line for line in gw.log_lines)


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


async def test_attacker_tag_page_nested_past_the_parsers_depth_is_an_upstream_error(
        session: aiohttp.ClientSession) -> None:
    async def nested(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"[" * 50_000 + b"]" * 50_000,
                            content_type="application/json")

    async with Server(nested) as hostile:
        with pytest.raises(UpstreamError, match="not JSON"):
            await OciUpstream(hostile.url, lambda: session).tags("x")


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


class _Moving:
    """An upstream holding one small image under ``latest``; told to, it says (HEAD) that the
    tag moved but refuses every GET with 429 and ``retry_after`` (Docker Hub's pattern: a
    HEAD costs nothing, a GET counts against the rate limit), or sends ``garbage`` as the
    manifest."""

    MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"

    def __init__(self) -> None:
        self.config_blob = b'{"architecture":"amd64","os":"linux"}'
        self.layer = b"the genuine layer" * 64
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": self.MEDIA_TYPE,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": _sha256(self.config_blob), "size": len(self.config_blob)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": _sha256(self.layer), "size": len(self.layer)}]}).encode()
        self.name = f"library/app-{uuid.uuid4().hex[:8]}"
        self.limited = False
        self.retry_after = "30"
        self.garbage: bytes | None = None

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if "/manifests/" in request.path:
            if self.garbage is not None:
                return web.Response(body=self.garbage, content_type=self.MEDIA_TYPE)
            if self.limited and request.method == "HEAD":
                return web.Response(content_type=self.MEDIA_TYPE, headers={
                    "Docker-Content-Digest": "sha256:" + "b" * 64})
            if self.limited or not request.path.endswith(f"/{self.name}/manifests/latest"):
                return web.json_response({"errors": [{"code": "TOOMANYREQUESTS"}]},
                                         status=429, headers={"Retry-After": self.retry_after})
            return web.Response(body=self.manifest, content_type=self.MEDIA_TYPE,
                                headers={"Docker-Content-Digest": _sha256(self.manifest)})
        for blob in (self.config_blob, self.layer):
            if request.path.endswith(_sha256(blob)):
                return web.Response(body=blob)
        return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)


# -- redirects, token answers, slow answers -------------------------------------------------

SECRET = b'{"token": "internal-secret-7c1e", "AccessKeyId": "ASIAINTERNAL"}'
BASIC = aiohttp.encode_basic_auth("puller", PASSWORD)


def _internal() -> Listener:
    """A service only the gateway's host can reach (an instance metadata endpoint): it
    counts the connections made to it and answers ``SECRET`` over http."""
    return Listener(answer=b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                           % (len(SECRET), SECRET))


class _Image:
    """A small image (a config and one layer) an upstream serves."""

    def __init__(self, seed: str) -> None:
        self.config = json.dumps({"architecture": "amd64", "os": "linux",
                                  "seed": seed}).encode()
        self.layer = f"the layer of {seed}".encode() * 100
        self.blobs = {_sha256(b): b for b in (self.config, self.layer)}
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": _sha256(self.config), "size": len(self.config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": _sha256(self.layer), "size": len(self.layer)}]}).encode()

    def answer(self, path: str) -> web.StreamResponse:
        if "/manifests/" in path:
            return web.Response(body=self.manifest,
                                content_type="application/vnd.oci.image.manifest.v1+json")
        blob = self.blobs.get(path.rsplit("/", 1)[-1])
        if blob is None:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        return web.Response(body=blob, content_type="application/octet-stream")


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def _filled(upstream: EmulatorProcess, repository: str) -> None:
    for _ in range(200):
        if await _ecr_images(upstream, repository):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{repository} was never filled")


@contextlib.asynccontextmanager
async def _revalidating(upstream: EmulatorProcess, source: _Moving,
                        tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    """A gateway that asks the upstream about a tag on every pull (tag TTL 0)."""
    async with Server(source) as hostile:
        config = {"mirrors": {"docker.io": {"repository_prefix": "docker-hub", "upstream": {
            "url": hostile.url, "tag_ttl_seconds": 0}}}}
        with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
            yield gw


async def test_attacker_rate_limiting_the_moved_tag_still_gets_ecrs_copy_served(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """HEAD says the tag moved, the GET for the new image is refused (429): ECR's copy is
    served (stale-if-error), logged and counted, not the upstream's refusal."""
    source = _Moving()
    async with _revalidating(upstream, source, tmp_path) as gw:
        url = f"{gw.url}/v2/{source.name}/manifests/latest"
        async with session.get(url, params=NS) as r:
            assert r.status == 200 and await r.read() == source.manifest
        await _filled(upstream, f"docker-hub/{source.name}")
        source.limited = True
        async with session.get(url, params=NS) as r:
            assert r.status == 200, await r.text()
            assert await r.read() == source.manifest
        async with session.get(f"{gw.url}/metrics") as r:
            metrics = await r.text()
        assert 'ecr_gateway_pullthrough_events_total{event="stale",registry="docker.io"} 1.0' \
            in metrics
        assert await gw.logged("serving ECR's copy")


@contextlib.asynccontextmanager
async def stalled_tag_check(upstream: EmulatorProcess, session: aiohttp.ClientSession,
                            tmp_path: Path) -> AsyncIterator[tuple[str, _Moving, list[int]]]:
    """A mirror (tag TTL and read timeout 1 s) whose upstream, once ECR holds its image,
    holds every HEAD of the tag past the read timeout: (the tag's manifest URL on the
    gateway, the upstream's image, the HEADs held so far), past the tag TTL."""
    source = _Moving()
    stalled = asyncio.Event()
    heads = [0]

    async def stalling(request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD" and stalled.is_set():
            heads[0] += 1
            await asyncio.sleep(3)  # past the read timeout
        return await source(request)

    async with Server(stalling) as hostile:
        config = {"mirrors": {"docker.io": {"repository_prefix": "docker-hub", "upstream": {
            "url": hostile.url, "tag_ttl_seconds": 1, "timeout_seconds": 1}}}}
        with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
            url = f"{gw.url}/v2/{source.name}/manifests/latest"
            async with session.get(url, params=NS) as r:
                assert r.status == 200 and await r.read() == source.manifest
            await _filled(upstream, f"docker-hub/{source.name}")
            await asyncio.sleep(1.5)  # past the tag TTL
            stalled.set()
            yield url, source, heads


async def test_attacker_stalling_the_tag_check_holds_one_pull_not_every_pull(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """Once ECR holds the image, the upstream answers the tag's HEAD with nothing (it holds
    the connection): the pull that asked waits out the read timeout and gets ECR's copy; the
    pulls after it get ECR's copy at once for a tag TTL, not each the whole timeout (30
    seconds by default, on every pull of every image the mirror holds)."""
    async with stalled_tag_check(upstream, session, tmp_path) as (url, source, _):
        took = []
        for _ in range(3):
            started = asyncio.get_running_loop().time()
            async with session.get(url, params=NS) as r:
                assert r.status == 200 and await r.read() == source.manifest
            took.append(asyncio.get_running_loop().time() - started)
    assert 0.9 < took[0] < 3, took  # the read timeout
    assert max(took[1:]) < 0.5, took


@pytest.mark.parametrize(("sent", "forwarded"), [
    ("abc; <script>alert(1)</script>", None),  # not a time: no Retry-After at all
    ("7.2", "8"),
    ("86400000000", "3600"),  # a day's wait and more: an hour at most
    ("nan", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", "1"),  # a date gone by: at once
])
async def test_attacker_retry_after_reaches_clients_only_as_whole_seconds(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path,
        sent: str, forwarded: str | None) -> None:
    source = _Moving()
    source.retry_after = sent
    async with _revalidating(upstream, source, tmp_path) as gw:
        async with session.get(f"{gw.url}/v2/library/uncached/manifests/v1", params=NS) as r:
            assert r.status == 429, await r.text()
            assert r.headers.get("Retry-After") == forwarded
            assert "<script>" not in await r.text()


async def test_attacker_garbage_manifest_is_the_upstreams_fault(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """A manifest the upstream sends that is no manifest is a bad gateway answer (502 naming
    the upstream), never the client's 400 MANIFEST_INVALID; nothing reaches ECR."""
    source = _Moving()
    source.garbage = b'{"schemaVersion": 2, "mediaType": 5}'
    async with _revalidating(upstream, source, tmp_path) as gw:
        async with session.get(f"{gw.url}/v2/{source.name}/manifests/latest",
                               params=NS) as r:
            status, body = r.status, await r.read()
    assert status == 502, (status, body[:300])
    (error,) = json.loads(body)["errors"]
    assert error["code"] == "MANIFEST_INVALID"
    assert "docker.io sent" in error["message"], error
    assert error["detail"]["upstream"] == "docker.io"
    assert await _ecr_images(upstream, f"docker-hub/{source.name}") == []


async def test_an_upstream_that_would_compress_is_asked_for_the_bytes_as_stored(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """A registry behind a compressing proxy gzips what a client says it accepts: the gateway
    asks for the bytes as stored (digests are of them), so manifests and blobs arrive, and
    reach the client, byte for byte."""
    image = _Image("compressing")
    offered: list[str] = []

    async def compressing(request: web.Request) -> web.StreamResponse:
        offered.append(request.headers.get("Accept-Encoding", ""))
        answer = image.answer(request.path)
        assert isinstance(answer, web.Response) and answer.body is not None
        if "gzip" in offered[-1] and answer.status == 200:
            answer = web.Response(body=gzip.compress(bytes(answer.body)),
                                  content_type=answer.content_type,
                                  headers={"Content-Encoding": "gzip"})
        return answer

    async with Server(compressing) as hostile, _gateway(upstream, hostile, tmp_path) as gw:
        base = f"{gw.url}/v2/library/compressing"
        async with session.get(f"{base}/manifests/v1", params=NS) as r:
            assert (r.status, await r.read()) == (200, image.manifest)
        for digest, blob in image.blobs.items():
            async with session.get(f"{base}/blobs/{digest}", params=NS) as r:
                assert (r.status, await r.read()) == (200, blob)
    assert offered and all(sent == "identity" for sent in offered), offered


async def _sync_from(hostile: Server, upstream: EmulatorProcess, tmp_path: Path, source: str,
                     *args: str, pid: list[int] | None = None) -> tuple[int | None, str, str]:
    """Run ``ecr-gateway sync`` (its process id appended to ``pid``, if given)."""
    sync = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "sync", "--config",
        str(sync_config(upstream, tmp_path)), source, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    if pid is not None:
        pid.append(sync.pid)
    out, err = await asyncio.wait_for(sync.communicate(), 120)
    return sync.returncode, out.decode(), err.decode()


async def test_attacker_tag_names_never_steer_sync(upstream: EmulatorProcess,
                                                   tmp_path: Path) -> None:
    """The upstream lists tags that are no OCI tags: 5000 digits (int() refuses them),
    terminal escape sequences, a path into another repository. None is selected, asked for
    or printed; the run copies the one real tag, and text the upstream chose (a manifest's
    media type in an error) reaches the terminal escaped."""
    source = _Moving()
    repository = source.name.rsplit("/", 1)[-1]
    escape = "\x1b]0;pwned\x07\x1b[2J"
    forged = json.dumps({"schemaVersion": 2, "mediaType": f"text/{escape}",
                         "layers": []}).encode()
    listed = ["latest", "9" * 5000, f"v1{escape}", "../../other/manifests/latest", "1.0\n",
              "broken"]

    async def hostile_tags(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/tags/list"):
            return web.json_response({"name": source.name, "tags": listed})
        if request.path.endswith("/manifests/broken"):
            return web.Response(body=forged, content_type="application/json")
        return await source(request)

    async with Server(hostile_tags) as hostile:
        status, out, err = await _sync_from(hostile, upstream, tmp_path,
                                            f"{hostile.url}/{source.name}",
                                            f"synced/{repository}")
    assert status == 1, (out, err)  # "broken" failed, nothing crashed
    assert "Traceback" not in err, err
    assert "\x1b" not in out + err and "\x07" not in out + err, (out, err)
    assert "\\x1b" in err  # the media type, escaped
    assert "4 tags the source lists are not valid tags: skipped" in err
    asked = [path for path, _ in hostile.seen]
    assert not any("other" in path or "\n" in path or "999" in path for path in asked), asked
    images = await _ecr_images(upstream, f"synced/{repository}")
    assert [i.get("imageTags") for i in images if isinstance(i, dict)] == [["latest"]]



async def test_attacker_tag_pages_of_huge_names_never_pile_up_in_sync(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """Each tag page (within its 16 MiB) lists one name of 15 MiB that is no OCI tag, and
    links to the next: sync keeps none of them, nor a page while it reads the next, so its
    memory stays put however many pages come (kept, a thousand pages would take 15 GiB; a
    page held while the next is read leaves the peak to the allocator's luck, 30 to 67 MiB
    higher after 18 pages)."""
    pid: list[int] = []
    peaks: list[int] = []
    pages = 20

    async def huge_names(request: web.Request) -> web.StreamResponse:
        peaks.append(peak_rss(pid[0]))  # what the pages before this one left behind
        page = len(peaks)
        more = {"Link": f'</v2/x/y/tags/list?n=1000&last=p{page}>; rel="next"'} \
            if page < pages else {}
        return web.json_response({"name": "x/y", "tags": [f"{page}" + "a" * (15 * MiB)]},
                                 headers=more)

    async with Server(huge_names) as hostile:
        status, out, err = await _sync_from(hostile, upstream, tmp_path, f"{hostile.url}/x/y",
                                            "synced/huge-names", pid=pid)
    assert status == 0, (out, err)
    assert f"{pages} tags the source lists are not valid tags: skipped" in err, err
    assert len(peaks) == pages
    grown = peaks[-1] - peaks[1]
    assert grown < 64 * MiB, f"sync grew {grown // MiB} MiB over {pages - 2} pages"


async def test_attacker_sync_over_plain_http_never_gets_the_credentials(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """As a mirror's upstream: http:// only for a loopback registry (here 127.1, which the
    check does not take for loopback: any other host); refused before anything is asked."""
    async def basic(request: web.Request) -> web.StreamResponse:
        if "Authorization" not in request.headers:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="hub"'})
        return web.json_response({"name": "library/app", "tags": []})

    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    async with Server(basic) as hostile:
        elsewhere = hostile.url.replace("127.0.0.1", "127.1")
        status, out, err = await _sync_from(
            hostile, upstream, tmp_path, f"{elsewhere}/library/app", "synced/plain",
            "--username", "puller", "--password-file", str(password))
    assert status == 2, (out, err)
    assert "http:// only for a loopback registry" in err, err
    assert hostile.seen == [], "the source was asked"


@pytest.mark.parametrize("target", [
    "http://127.0.0.1:{port}/latest/meta-data/",   # another port of the upstream's host
    "http://localhost:{port}/latest/meta-data/",   # another host name, plain http
    "https://127.0.0.1:{port}/latest/meta-data/",  # https, but a loopback address
    "https://localhost:{port}/latest/meta-data/",  # https, a name that resolves to loopback
    "https://127.1:{port}/latest/meta-data/",      # loopback in a short form aiohttp does not
    "https://2130706433:{port}/latest/meta-data/",  # resolve, as one number
])
async def test_attacker_redirect_to_an_internal_service_is_refused(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path,
        target: str) -> None:
    image = _Image("ssrf")
    async with _internal() as internal:
        location = target.format(port=internal.port)

        async def redirecting(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Authorization") != BASIC:
                return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="x"'})
            if "/blobs/" in request.path:
                raise web.HTTPFound(location)
            return image.answer(request.path)

        async with Server(redirecting) as hostile, _gateway(upstream, hostile, tmp_path) as gw:
            digest = _sha256(image.layer)
            async with session.get(f"{gw.url}/v2/library/ssrf/blobs/{digest}", params=NS) as r:
                status, body = r.status, await r.read()
            error = _oci_error(status, body)
            assert error["code"] == "UNAVAILABLE", error
            assert "redirect" in str(error["message"]), error
            assert any("/blobs/" in path for path, _auth in hostile.seen)
            assert internal.connections == 0, "the internal service was contacted"
            assert b"internal-secret" not in body and b"ASIAINTERNAL" not in body
            assert not any("internal-secret" in line for line in gw.log_lines)


@pytest.mark.parametrize(("target", "private_redirects", "names_the_setting"), [
    ("https://10.1.2.3/registry/blobs/data?X-Amz-Signature=sig-5e1f", False, True),
    ("https://100.100.100.200/latest/meta-data/", False, False),  # Alibaba Cloud's metadata
    ("https://100.100.100.200/latest/meta-data/", True, False),
    ("https://[fd00:ec2::254]/latest/meta-data/", True, False),
])
async def test_attacker_redirect_into_a_private_network_is_refused_at_once(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path,
        target: str, private_redirects: bool, names_the_setting: bool) -> None:
    """No connection is tried: the upstream's timeout is a minute, and the client hears the
    refusal within seconds. A private address names the setting that would allow it; a
    metadata address is refused whatever the setting."""
    image = _Image("vpc")

    async def redirecting(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != BASIC:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="x"'})
        if "/blobs/" in request.path:
            raise web.HTTPTemporaryRedirect(target)
        return image.answer(request.path)

    allowing = {"private_redirects": True} if private_redirects else {}  # else the default
    async with Server(redirecting) as hostile, _gateway(
            upstream, hostile, tmp_path, timeout_seconds=60, **allowing) as gw:
        digest = _sha256(image.layer)
        async with session.get(f"{gw.url}/v2/library/vpc/blobs/{digest}", params=NS,
                               timeout=aiohttp.ClientTimeout(total=5)) as r:
            status, body = r.status, await r.read()
        error = _oci_error(status, body)
        assert error["code"] == "UNAVAILABLE", error
        message = str(error["message"])
        assert "redirect" in message and "not followed" in message, error
        assert ("private_redirects" in message) is names_the_setting, error
        assert any("/blobs/" in path for path, _auth in hostile.seen)
        assert b"sig-5e1f" not in body and PASSWORD.encode() not in body
        assert not any("sig-5e1f" in line or PASSWORD in line for line in gw.log_lines)


async def test_same_origin_redirect_is_followed_with_the_credentials(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """A registry that moves its blobs to another path of its own origin still serves."""
    image = _Image("moved")

    async def moving(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != BASIC:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="x"'})
        if request.path.startswith("/v2/") and "/blobs/" in request.path:
            raise web.HTTPTemporaryRedirect("/storage/" + request.path.rsplit("/", 1)[-1])
        return image.answer(request.path)

    async with Server(moving) as hostile, _gateway(upstream, hostile, tmp_path) as gw:
        digest = _sha256(image.layer)
        async with session.get(f"{gw.url}/v2/library/moved/blobs/{digest}", params=NS) as r:
            assert r.status == 200, await r.text()
            assert await r.read() == image.layer
        assert (f"/storage/{digest}", BASIC) in hostile.seen


async def test_redirect_to_a_cdn_on_another_host_is_followed_without_the_credentials(
        session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """Docker Hub and ghcr send a blob's GET to an https CDN on another host: followed, but
    the upstream's Authorization stays with the upstream. (The CDN is this test's TLS server
    under the name cdn.test, reached through a session that resolves it here.)"""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    proc = await asyncio.create_subprocess_exec(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-subj", "/CN=cdn.test", "-keyout", str(key), "-out", str(cert),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    assert await proc.wait() == 0
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    layer = b"a layer on the CDN" * 1000
    cdn_seen: list[str | None] = []

    async def cdn_answer(request: web.Request) -> web.StreamResponse:
        cdn_seen.append(request.headers.get("Authorization"))
        return web.Response(body=layer)

    app = web.Application()
    app.router.add_get("/{tail:.*}", cdn_answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    cdn_port = runner.addresses[0][1]

    class _CdnHere(AbstractResolver):
        async def resolve(self, host: str, port: int = 0,
                          family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
            assert host == "cdn.test", host
            return [{"hostname": host, "host": "127.0.0.1", "port": port,
                     "family": socket.AF_INET, "proto": 0, "flags": 0}]

        async def close(self) -> None:
            pass

    async def registry(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != BASIC:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="x"'})
        raise web.HTTPTemporaryRedirect(f"https://cdn.test:{cdn_port}/blob?sig=a%2Fb")

    try:
        async with Server(registry) as hub, aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=_CdnHere(), ssl=False)) as cdn_session:
            client = OciUpstream(hub.url, lambda: session, "puller", PASSWORD,
                                 foreign=lambda: cdn_session)
            _size, pieces = await client.blob("library/x", _sha256(layer), len(layer))
            assert b"".join([p async for p in pieces]) == layer
        assert cdn_seen == [None], "the upstream's credentials went to the CDN"
    finally:
        await runner.cleanup()


async def test_attacker_realm_redirect_to_an_internal_service_is_refused(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    async with _internal() as internal:
        async def realm_redirects(request: web.Request) -> web.StreamResponse:
            if request.path == "/token":
                raise web.HTTPFound(f"http://127.0.0.1:{internal.port}/latest/meta-data/")
            if request.headers.get("Authorization") is None:
                return web.Response(status=401, headers={
                    "WWW-Authenticate": f'Bearer realm="{hostile.url}/token",service="x"'})
            return web.Response(status=403)  # never a bearer token the realm did not give

        async with Server(realm_redirects) as hostile, \
                _gateway(upstream, hostile, tmp_path) as gw:
            async with session.get(f"{gw.url}/v2/library/realm/manifests/latest",
                                   params=NS) as r:
                status, body = r.status, await r.read()
            error = _oci_error(status, body)
            assert error["code"] == "UNAVAILABLE", error
            assert internal.connections == 0, "the internal service was asked for a token"
            assert b"internal-secret" not in body
            assert [auth for path, auth in hostile.seen if path != "/token"] == [None]


async def test_attacker_endless_token_answer_is_cut_off(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    offered, sent = 128 * 1024 * 1024, [0]

    async def endless_token(request: web.Request) -> web.StreamResponse:
        if request.path == "/token":
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)  # chunked: no length to refuse up front
            try:
                await response.write(b'{"token": "')
                while sent[0] < offered:
                    await response.write(b"a" * (1 << 20))
                    sent[0] += 1 << 20
            except ConnectionResetError:
                pass
            return response
        return web.Response(status=401, headers={
            "WWW-Authenticate": f'Bearer realm="{hostile.url}/token",service="x"'})

    async with Server(endless_token) as hostile, _gateway(upstream, hostile, tmp_path) as gw:
        async with session.get(f"{gw.url}/v2/library/endless/manifests/latest",
                               params=NS) as r:
            status, body = r.status, await r.read()
        error = _oci_error(status, body)
        assert error["code"] == "UNAVAILABLE", error
    assert sent[0] < 32 * 1024 * 1024, f"the gateway read {sent[0]} bytes of a token answer"


async def test_attacker_dripped_manifest_ends_within_the_deadline(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """One byte every half second never lets the 1-second read timeout fire; the deadline
    (four read timeouts) ends the request all the same."""
    manifest = _Image("drip").manifest

    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": "application/vnd.oci.image.manifest.v1+json",
            "Content-Length": str(len(manifest))})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for byte in manifest[:60]:
                await response.write(bytes([byte]))
                await asyncio.sleep(0.5)
        return response

    async with Server(drip) as hostile, \
            _gateway(upstream, hostile, tmp_path, timeout_seconds=1.0) as gw:
        started = asyncio.get_running_loop().time()
        async with asyncio.timeout(15):
            async with session.get(f"{gw.url}/v2/library/drip/manifests/latest",
                                   params=NS) as r:
                status, body = r.status, await r.read()
        took = asyncio.get_running_loop().time() - started
        error = _oci_error(status, body)
        assert error["code"] == "UNAVAILABLE", error
        assert "within 4 seconds" in str(error["message"]), error
        assert took < 10, took


class _Dribbling:
    """``image``, its layer sent with its length but one byte every 0.3 s (inside any read
    timeout) for a minute; ``cut_off`` set once the reader closed that connection."""

    def __init__(self, image: _Image) -> None:
        self.image = image
        self.cut_off = asyncio.Event()

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/tags/list"):
            return web.json_response({"name": "library/drip", "tags": ["latest"]})
        if not request.path.endswith(_sha256(self.image.layer)):
            return self.image.answer(request.path)
        response = web.StreamResponse(headers={"Content-Length": str(len(self.image.layer))})
        await response.prepare(request)
        try:
            for byte in self.image.layer[:200]:
                await response.write(bytes([byte]))
                await asyncio.sleep(0.3)
        except ConnectionError:
            self.cut_off.set()
        return response


async def test_attacker_dribbled_blob_fails_sync_within_the_minimum_rate(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """Sync holds a source's blob bodies to the same floor as the pull-through: after the
    grace (1 s here), 64 KiB a second on average. The run fails in seconds, names the
    floor, and completes no layer upload with the bytes it got."""
    image = _Image("dribbled-sync")
    source = _Dribbling(image)
    started = asyncio.get_running_loop().time()
    async with Server(source) as hostile:
        status, out, err = await _sync_from(
            hostile, upstream, tmp_path, f"{hostile.url}/library/drip:latest", "synced/drip",
            "--blob-grace-seconds", "1", "--blob-min-rate", "65536")
        took = asyncio.get_running_loop().time() - started
        await asyncio.wait_for(source.cut_off.wait(), 5)
    assert status == 1, (out, err)
    assert "slower than 65536 bytes a second after 1 seconds" in err, err
    assert took < 20, f"sync took {took:.1f} s over a dribbled blob"
    layer = _sha256(image.layer)
    assert not [e for e in upstream.requests("CompleteLayerUpload") if layer in json.dumps(e)]
    assert await _ecr_images(upstream, "synced/drip") == []


async def test_rotated_token_is_asked_for_again(session: aiohttp.ClientSession) -> None:
    """The upstream stops taking a token long before its expires_in: after its 401 the realm
    is asked again (once), and the pull goes on with the new token."""
    image = _Image("rotated")
    current, realm_asked = ["first"], [0]

    async def rotating(request: web.Request) -> web.StreamResponse:
        if request.path == "/token":
            realm_asked[0] += 1
            return web.json_response({"token": current[0], "expires_in": 3600})
        if request.headers.get("Authorization") != f"Bearer {current[0]}":
            return web.Response(status=401, headers={
                "WWW-Authenticate": f'Bearer realm="{hostile.url}/token",service="x"'})
        return image.answer(request.path)

    async with Server(rotating) as hostile:
        client = OciUpstream(hostile.url, lambda: session)
        assert (await client.manifest("library/rotated", "v1", ())).body == image.manifest
        assert realm_asked == [1]
        current[0] = "second"  # rotated, the first revoked
        assert (await client.manifest("library/rotated", "v1", ())).body == image.manifest
        assert realm_asked == [2]
        # A token the realm gives and the upstream refuses is not asked for in a loop.
        current[0] = "third"
        realm_asked[0] = 0

        async def stale_realm(request: web.Request) -> web.StreamResponse:
            if request.path == "/token":
                realm_asked[0] += 1
                return web.json_response({"token": "never-taken"})
            return await rotating(request)

        hostile.handler = stale_realm
        with pytest.raises(UpstreamError) as refused:
            await client.manifest("library/rotated", "v1", ())
        assert refused.value.status == 401 and realm_asked == [1]


@pytest.mark.parametrize(("answer", "served"), [
    (b"[]", False),
    (b'"a token"', False),
    (b'{"token": 5}', False),
    (b'{"token": "bad\\r\\nX-Injected: 1"}', False),
    (b'{"token": "' + b"t" * 20_000 + b'"}', False),
    (b"not json at all", False),
    (b"[" * 30_000 + b"]" * 30_000, False),  # nested past the parser's depth
    (b'{"token": "good", "expires_in": "soon"}', True),
    (b'{"token": "good", "expires_in": -5}', True),
    (b'{"token": "good", "expires_in": NaN}', True),
    (b'{"token": "good", "expires_in": 1e999}', True),
])
async def test_attacker_bad_token_answer_is_an_upstream_error(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path,
        answer: bytes, served: bool) -> None:
    image = _Image("token")

    async def odd_realm(request: web.Request) -> web.StreamResponse:
        if request.path == "/token":
            return web.Response(body=answer, content_type="application/json")
        if request.headers.get("Authorization") != "Bearer good":
            return web.Response(status=401, headers={
                "WWW-Authenticate": f'Bearer realm="{hostile.url}/token",service="x"'})
        return image.answer(request.path)

    async with Server(odd_realm) as hostile, _gateway(upstream, hostile, tmp_path) as gw:
        async with session.get(f"{gw.url}/v2/library/token/manifests/latest",
                               params=NS) as r:
            status, body = r.status, await r.read()
        if served:
            assert status == 200 and body == image.manifest, (status, body[:300])
        else:
            error = _oci_error(status, body)
            assert error["code"] == "UNAVAILABLE", error
        assert not any("Traceback" in line for line in gw.log_lines), gw.log_lines[-20:]


# -- tag pages, blob sizes, index fan-out ----------------------------------------------------


async def test_attacker_tag_pages_that_never_end_are_cut_off(
        session: aiohttp.ClientSession) -> None:
    """Each page names a new ``last`` (so no page is asked twice) and a tag seen before:
    the listing ends after MAX_TAG_PAGES pages."""
    pages = [0]

    async def endless(request: web.Request) -> web.StreamResponse:
        pages[0] += 1
        return web.json_response({"name": "x", "tags": ["v1"]}, headers={
            "Link": f'</v2/x/tags/list?n=1000&last=v{pages[0]}>; rel="next"'})

    async with Server(endless) as hostile:
        with pytest.raises(UpstreamError, match="more than 1000 pages"):
            await asyncio.wait_for(OciUpstream(hostile.url, lambda: session).tags("x"), 60)
    assert pages[0] == 1000


@pytest.mark.parametrize(("page", "said"), [
    ({"name": "x", "tags": [f"t{i}" for i in range(100_001)]}, "more than 100000 tags"),
    ({"name": "x", "tags": 5}, "not a list"),
])
async def test_attacker_tag_page_past_the_bounds_is_an_upstream_error(
        session: aiohttp.ClientSession, page: dict[str, object], said: str) -> None:
    async def listing(request: web.Request) -> web.StreamResponse:
        return web.json_response(page)

    async with Server(listing) as hostile:
        with pytest.raises(UpstreamError, match=said):
            await OciUpstream(hostile.url, lambda: session).tags("x")


async def test_next_page_among_other_links_is_asked_of_the_upstreams_origin(
        session: aiohttp.ClientSession) -> None:
    """A Link header may hold several link-values (RFC 8288): the ``next`` one is followed
    wherever it stands, and only its path is taken: a Link naming another host never sends
    the gateway (with the upstream's credentials) there."""
    async with Server(_token) as elsewhere:
        async def two_pages(request: web.Request) -> web.StreamResponse:
            if request.query.get("last") == "v1":
                return web.json_response({"name": "x", "tags": ["v2", "v1"]})
            return web.json_response({"name": "x", "tags": ["v1"]}, headers={"Link": (
                '</v2/x/tags/list?n=1000>; rel="prev", '
                f'<{elsewhere.as_localhost}/v2/x/tags/list?n=1000&last=v1>; rel="next"')})

        async with Server(two_pages) as hostile:
            client = OciUpstream(hostile.url, lambda: session, "puller", PASSWORD)
            assert (await client.tags("x")).tags == ["v1", "v2"]
        assert elsewhere.seen == []
        assert [path for path, _ in hostile.seen] == ["/v2/x/tags/list"] * 2


async def test_attacker_blob_shorter_than_its_manifest_says_is_refused(
        session: aiohttp.ClientSession) -> None:
    """The bytes hash to the digest, but the manifest says the blob is larger, and the body
    comes without a length: no copy of the blob the manifest names."""
    layer = b"a short layer" * 100

    async def short(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)  # chunked: no length to check up front
        await response.write(layer)
        return response

    async with Server(short) as hostile:
        client = OciUpstream(hostile.url, lambda: session)
        _size, pieces = await client.blob("library/x", _sha256(layer), len(layer) * 1000)
        with pytest.raises(UpstreamError, match="bytes where its manifest says"):
            async for _ in pieces:
                pass


def _index(children: list[tuple[bytes, str]]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        {"mediaType": media_type, "digest": _sha256(body), "size": len(body),
         "platform": {"architecture": "amd64", "os": "linux"}}
        for body, media_type in children]}).encode()


INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE = "application/vnd.oci.image.manifest.v1+json"


class _Indexes:
    """An upstream whose ``latest`` is ``top``, an index; other manifests by digest."""

    def __init__(self, top: bytes, manifests: list[tuple[bytes, str]], image: _Image) -> None:
        self.top = top
        self.image = image
        self.by_digest = {_sha256(body): (body, media_type) for body, media_type in manifests}
        self.by_digest[_sha256(top)] = (top, INDEX)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        reference = request.path.rsplit("/", 1)[-1]
        if request.path.endswith("/tags/list"):
            return web.json_response({"name": "x", "tags": ["latest"]})
        if request.path.endswith("/manifests/latest"):
            return web.Response(body=self.top, content_type=INDEX)
        if "/manifests/" in request.path:
            if reference not in self.by_digest:
                return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]},
                                         status=404)
            body, media_type = self.by_digest[reference]
            return web.Response(body=body, content_type=media_type)
        return self.image.answer(request.path)


def _wide_index() -> bytes:
    """An index of 1025 entries, one more than an index's copy takes."""
    return _index([(b"entry %d" % i, IMAGE) for i in range(1025)])


async def test_attacker_index_of_too_many_entries_is_refused(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    source = _Indexes(_wide_index(), [], _Image("wide"))
    async with Server(source) as hostile, \
            _gateway(upstream, hostile, tmp_path, platforms="all") as gw:
        async with session.get(f"{gw.url}/v2/library/wide/manifests/latest", params=NS) as r:
            status, body = r.status, await r.read()
        assert status == 502, (status, body[:300])
        (error,) = json.loads(body)["errors"]
        assert error["code"] == "MANIFEST_INVALID", error
        assert "1025 manifests" in error["detail"]["reason"], error
        await asyncio.sleep(1)  # no copy goes on behind the answer
        assert [path for path, _ in hostile.seen] == ["/v2/library/wide/manifests/latest"]
    async with ecr_client(upstream.url) as ecr:
        found = await ecr.describe_repositories()
    assert not [r for r in found["repositories"] if "wide" in r["repositoryName"]]


async def test_attacker_indexes_nested_past_the_depth_are_not_copied(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """index → index → index → image: with ``platforms: all`` the copy stops where indexes
    nest more than two deep, and nothing of the image or its indexes is put into ECR."""
    image = _Image("nested")
    deepest = _index([(image.manifest, IMAGE)])
    middle = _index([(deepest, INDEX)])
    top = _index([(middle, INDEX)])
    source = _Indexes(top, [(image.manifest, IMAGE), (deepest, INDEX), (middle, INDEX)], image)
    async with Server(source) as hostile, \
            _gateway(upstream, hostile, tmp_path, platforms="all") as gw:
        async with session.get(f"{gw.url}/v2/library/nested/manifests/latest",
                               params=NS) as r:
            assert r.status == 200, await r.text()
            assert await r.read() == top
        assert await gw.logged("indexes nested more than 2 deep")
        await asyncio.sleep(1)
        assert not any(path.endswith(_sha256(image.manifest)) for path, _ in hostile.seen)
    assert await _ecr_images(upstream, "docker-hub/library/nested") == []



def _heavy_images(count: int, layers: int) -> tuple[list[bytes], _Image]:
    """``count`` distinct images, each naming the same small layer ``layers`` times: within
    an image's own bounds, and cheap to copy, but their index's copy takes count x layers
    blobs."""
    image = _Image("heavy")
    doc = json.loads(image.manifest)
    doc["layers"] = doc["layers"] * layers
    manifests = [json.dumps({**doc, "annotations": {"n": str(i)}}).encode()
                 for i in range(count)]
    return manifests, image


async def test_attacker_index_of_heavy_images_stops_at_the_copys_blob_bound(
        upstream: EmulatorProcess, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """Five images of 1,001 blobs each (each image within its own bound of 1,024): with
    ``platforms: all`` the index's copy stops past 4,096 blobs in all, and the index is not
    put into ECR (an index of a thousand such images would be a million blob copies)."""
    manifests, image = _heavy_images(5, 1000)
    top = _index([(body, IMAGE) for body in manifests])
    source = _Indexes(top, [(body, IMAGE) for body in manifests], image)
    async with Server(source) as hostile, \
            _gateway(upstream, hostile, tmp_path, platforms="all") as gw:
        async with session.get(f"{gw.url}/v2/library/heavy/manifests/latest",
                               params=NS) as r:
            assert r.status == 200, await r.text()
        assert await gw.logged("an index whose copy takes more than 4096 blobs", seconds=60)
    assert _sha256(top) not in [
        held["imageDigest"] for held in await _ecr_images(upstream, "docker-hub/library/heavy")]


async def test_attacker_index_of_too_many_entries_fails_sync_cleanly(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    source = _Indexes(_wide_index(), [], _Image("wide"))
    async with Server(source) as hostile:
        status, out, err = await _sync_from(hostile, upstream, tmp_path,
                                            f"{hostile.url}/library/wide:latest", "synced/wide")
    assert status == 1, (out, err)
    assert "Traceback" not in err, err
    assert "synced/wide:latest: manifest invalid: an index of 1025 manifests" in err, err
    assert [path for path, _ in hostile.seen if "/manifests/" in path] == [
        "/v2/library/wide/manifests/latest"]
    async with ecr_client(upstream.url) as ecr:
        found = await ecr.describe_repositories()
    assert not [r for r in found["repositories"] if r["repositoryName"] == "synced/wide"]
