"""Pull-through from any OCI registry into ECR: a real distribution (Debian's docker-registry)
stands in for Docker Hub, a second gateway in htpasswd mode for a registry with the docker
token flow. Mirror clients (``?ns=docker.io``) read through the gateway; ECR (the emulator)
then holds what they read, byte for byte, and keeps serving it when the upstream is gone."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import aiohttp
import bcrypt
import pytest
from aiohttp import web

from bench.services import ReferenceRegistry
from tests.integration.mirror.helpers import ecr_image
from tests.integration.reliability.helpers import faults_admin
from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.oci import OCI_MANIFEST, OciClient, digest_of

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
NS = {"ns": "docker.io"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceRegistry]:
    registry = ReferenceRegistry(tmp_path_factory.mktemp("hub")).start()
    yield registry
    registry.stop()


def _mirror_config(url: str, **upstream: Any) -> dict[str, Any]:
    return {"mirrors": {"docker.io": {"repository_prefix": "docker-hub",
                                      "upstream": {"url": url, **upstream}}}}


@pytest.fixture(scope="module")
def gateway(upstream: EmulatorProcess, hub: ReferenceRegistry,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("gateway"), _mirror_config(hub.url),
                        upstream_url=upstream.url) as gw:
        yield gw


async def _push(http: aiohttp.ClientSession, url: str, name: str, tag: str,
                sizes: tuple[int, ...] = (300_000, 1234)) -> tuple[str, bytes, list[bytes]]:
    layers = [bytes([i + 1]) * size for i, size in enumerate(sizes)]
    layers = [name.encode() + tag.encode() + layer for layer in layers]  # unique per image
    digest, manifest = await OciClient(http, url).push_image(name, tag, layers)
    return digest, manifest, layers


async def _pull(http: aiohttp.ClientSession, base: str, name: str, reference: str,
                params: dict[str, str] | None = None) -> tuple[bytes, list[bytes]]:
    """A mirror client's pull: the manifest, then every blob it names."""
    async with http.get(f"{base}/v2/{name}/manifests/{reference}", params=params or NS,
                        headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}) as r:
        assert r.status == 200, (r.status, await r.text())
        body = await r.read()
    doc = json.loads(body)
    blobs = []
    for descriptor in [doc["config"], *doc["layers"]]:
        async with http.get(f"{base}/v2/{name}/blobs/{descriptor['digest']}",
                            params=params or NS) as r:
            assert r.status == 200, (r.status, await r.text())
            blobs.append(await r.read())
    return body, blobs


async def _access(gw: GatewayProcess, path: str, count: int) -> list[dict[str, Any]]:
    """The access-log entries of requests whose path holds ``path``, once there are
    ``count`` (a line is written just after its answer)."""
    entries: list[dict[str, Any]] = []
    for _ in range(50):
        entries = [e for e in gw.access_log() if path in e["path"]]
        if len(entries) >= count:
            break
        await asyncio.sleep(0.1)
    return entries


def _hub_reads(hub: ReferenceRegistry, digest: str) -> int:
    """How many times the upstream served this blob (its access log)."""
    log = (hub.root / "registry.log").read_text()
    return sum(1 for line in log.splitlines()
               if "response completed" in line and "http.request.method=GET" in line
               and f"/blobs/{digest}" in line)


async def test_cold_pull_by_tag_fills_ecr(gateway: GatewayProcess, upstream: EmulatorProcess,
                                          hub: ReferenceRegistry,
                                          http: aiohttp.ClientSession) -> None:
    digest, manifest, layers = await _push(http, hub.url, "library/cold", "v1")
    body, blobs = await _pull(http, gateway.url, "library/cold", "v1")
    assert body == manifest  # byte-exact
    assert blobs[1:] == layers
    image = await ecr_image(upstream, "docker-hub/library/cold", "v1")
    assert image["imageId"]["imageDigest"] == digest
    assert image["imageManifest"].encode() == manifest
    async with ecr_client(upstream.url) as ecr:
        answer = await ecr.batch_check_layer_availability(
            repositoryName="docker-hub/library/cold", layerDigests=[digest_of(x) for x in layers])
    assert all(layer["layerAvailability"] == "AVAILABLE" for layer in answer["layers"])


async def test_the_pulls_after_a_fill_ask_ecr_nothing(gateway: GatewayProcess,
                                                      upstream: EmulatorProcess,
                                                      hub: ReferenceRegistry,
                                                      http: aiohttp.ClientSession) -> None:
    """Other nodes pull what one node just filled: the fill leaves the tag, the manifest and
    where each blob is served in the gateway's caches, so those pulls make no ECR call."""
    digest, manifest, layers = await _push(http, hub.url, "library/primed", "v1")
    await _pull(http, gateway.url, "library/primed", "v1")
    await _until_stored(gateway, f"docker.io/library/primed:v1: stored in ECR as {digest}")
    upstream.clear_requests()
    body, blobs = await _pull(http, gateway.url, "library/primed", "v1")
    assert body == manifest and blobs[1:] == layers
    calls = [r["action"] for r in upstream.requests() if r["action"] != "LayerDownload"]
    assert calls == []


async def _until_stored(gateway: GatewayProcess, line: str) -> None:
    """Wait for the gateway's log line saying a fill completed."""
    for _ in range(100):
        if any(line in logged for logged in gateway.log_lines):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the fill did not complete:\n" + "\n".join(gateway.log_lines[-40:]))


async def test_a_fill_leaves_its_blobs_in_the_blob_cache(
        upstream: EmulatorProcess, hub: ReferenceRegistry, http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    """A node-local mirror (proxy mode with a blob cache): the blobs a fill verified are
    linked into the cache from the fill's spool, so the next pulls are served from the
    gateway's disk, without downloading them from ECR (or the upstream) again."""
    cache = tmp_path / "blobs"
    config = {**_mirror_config(hub.url),
              "blobs": {"mode": "proxy", "cache": {"path": str(cache)}}}
    digest, manifest, layers = await _push(http, hub.url, "library/cached", "v1",
                                           sizes=(3_000_000, 1234))
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gateway:
        body, blobs = await _pull(http, gateway.url, "library/cached", "v1")
        assert body == manifest and blobs[1:] == layers
        await _until_stored(gateway, f"docker.io/library/cached:v1: stored in ECR as {digest}")
        held = {path.name for path in (cache / "sha256").iterdir()}
        assert {digest_of(layer).partition(":")[2] for layer in layers} <= held
        upstream.clear_requests()
        reads = {d: _hub_reads(hub, d) for d in map(digest_of, blobs)}
        for _ in range(2):
            body, blobs = await _pull(http, gateway.url, "library/cached", "v1")
            assert body == manifest and blobs[1:] == layers
        assert [r["action"] for r in upstream.requests()] == []  # not even a download
        assert {d: _hub_reads(hub, d) for d in map(digest_of, blobs)} == reads
        async with http.get(f"{gateway.url}/metrics") as r:
            metrics = await r.text()
        adopted = 'ecr_gateway_cache_events_total{cache="blob",event="adopt"} 3.0'
        assert adopted in metrics  # the config and both layers


async def test_first_pull_by_digest(gateway: GatewayProcess, upstream: EmulatorProcess,
                                    hub: ReferenceRegistry,
                                    http: aiohttp.ClientSession) -> None:
    digest, manifest, layers = await _push(http, hub.url, "library/pinned", "v1")
    body, blobs = await _pull(http, gateway.url, "library/pinned", digest)
    assert body == manifest and blobs[1:] == layers
    image = await ecr_image(upstream, "docker-hub/library/pinned", digest)
    assert image["imageManifest"].encode() == manifest


async def test_served_from_ecr_when_the_upstream_is_gone(
        upstream: EmulatorProcess, http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    """A second node's gateway (cold caches, tag TTL 0: it asks the upstream every time)
    still serves an image ECR holds after the upstream stopped; an image ECR does not hold
    gets a clear OCI error."""
    hub = ReferenceRegistry(tmp_path / "hub").start()
    try:
        _digest, manifest, layers = await _push(http, hub.url, "library/kept", "v1")
        with GatewayProcess(tmp_path / "first", _mirror_config(hub.url),
                            upstream_url=upstream.url) as first:
            await _pull(http, first.url, "library/kept", "v1")
            await ecr_image(upstream, "docker-hub/library/kept", "v1")
    finally:
        hub.stop()
    config = _mirror_config(hub.url, tag_ttl_seconds=0)
    with GatewayProcess(tmp_path / "second", config, upstream_url=upstream.url) as second:
        body, blobs = await _pull(http, second.url, "library/kept", "v1")
        assert body == manifest and blobs[1:] == layers
        async with http.get(f"{second.url}/v2/library/never-pulled/manifests/v1",
                            params=NS) as r:
            assert r.status == 503
            error = (await r.json())["errors"][0]
        assert error["code"] == "UNAVAILABLE"
        assert "docker.io" in error["message"]
        stale = [line for line in second.log_lines if "serving ECR's copy" in line]
        assert stale, second.log_lines[-20:]


async def test_concurrent_cold_pulls_read_and_upload_each_blob_once(
        gateway: GatewayProcess, upstream: EmulatorProcess, hub: ReferenceRegistry,
        http: aiohttp.ClientSession) -> None:
    _digest, manifest, layers = await _push(http, hub.url, "library/fanin", "v1",
                                            sizes=(2_000_000, 700_000, 5000))
    upstream.clear_requests()
    try:
        pulls = await asyncio.gather(*(_pull(http, gateway.url, "library/fanin", "v1")
                                       for _ in range(16)))
    except AssertionError:
        print("\n".join(gateway.log_lines[-80:]))
        raise
    assert all(body == manifest and blobs[1:] == layers for body, blobs in pulls)
    await ecr_image(upstream, "docker-hub/library/fanin", "v1")
    for layer in layers:
        assert _hub_reads(hub, digest_of(layer)) == 1, digest_of(layer)
    completes = [r for r in upstream.requests("CompleteLayerUpload")
                 if r.get("repository") == "docker-hub/library/fanin"
                 or "docker-hub/library/fanin" in json.dumps(r)]
    assert len(completes) == len(layers) + 1, completes  # the layers and the config


async def _push_platforms(http: aiohttp.ClientSession, hub: ReferenceRegistry, name: str,
                          media_type: str) -> tuple[list[dict[str, Any]], bytes]:
    """An amd64 and an arm64 image on ``hub``, and ``latest`` an index (or docker list)
    of both: its entries, and its bytes."""
    client = OciClient(http, hub.url)
    children = []
    for arch in ("amd64", "arm64"):
        config = json.dumps({"architecture": arch, "os": "linux"}).encode()
        digest, manifest = await client.push_image(name, f"only-{arch}",
                                                   [arch.encode() * 1000], config)
        children.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest),
                         "platform": {"architecture": arch, "os": "linux"}})
    index = json.dumps({"schemaVersion": 2, "mediaType": media_type,
                        "manifests": children}).encode()
    async with http.put(f"{hub.url}/v2/{name}/manifests/latest", data=index,
                        headers={"Content-Type": media_type}) as r:
        assert r.status == 201
    return children, index

async def test_multi_arch_index(gateway: GatewayProcess, upstream: EmulatorProcess,
                                hub: ReferenceRegistry, http: aiohttp.ClientSession) -> None:
    children, index = await _push_platforms(http, hub, "library/multi", OCI_INDEX)
    async with http.get(f"{gateway.url}/v2/library/multi/manifests/latest", params=NS,
                        headers={"Accept": OCI_INDEX}) as r:
        assert r.status == 200 and await r.read() == index
    # A node pulls its own platform first; every platform lands in ECR, then the index.
    await _pull(http, gateway.url, "library/multi", children[1]["digest"])
    image = await ecr_image(upstream, "docker-hub/library/multi", "latest")
    assert image["imageManifest"].encode() == index
    for child in children:
        await ecr_image(upstream, "docker-hub/library/multi", child["digest"])



async def test_a_narrow_accept_never_re_points_the_tag(
        gateway: GatewayProcess, upstream: EmulatorProcess, hub: ReferenceRegistry,
        http: aiohttp.ClientSession) -> None:
    """The attacker's pull: an Accept of image manifests only, for a tag naming a docker
    manifest list. distribution answers it with the list's linux/amd64 manifest; that answer
    serves this client but must not become what the tag names for every other client (arm64
    nodes would get amd64), neither on the first, cold pull nor once the list is held."""
    children, listed = await _push_platforms(http, hub, "library/narrow", DOCKER_LIST)

    async def pull(accept: str) -> tuple[str, bytes]:
        async with http.get(f"{gateway.url}/v2/library/narrow/manifests/latest", params=NS,
                            headers={"Accept": accept}) as r:
            assert r.status == 200, (r.status, await r.text())
            return r.headers["Docker-Content-Digest"], await r.read()

    for _ in range(2):  # cold, then with the list held and checked
        digest, _body = await pull(OCI_MANIFEST)
        assert digest == children[0]["digest"]  # what distribution gives this client
        image = await ecr_image(upstream, "docker-hub/library/narrow", "latest")
        assert image["imageManifest"].encode() == listed
        assert await pull(f"{DOCKER_LIST}, {OCI_MANIFEST}") == (digest_of(listed), listed)


class _Front:
    """A small HTTP server on a free loopback port in front of ``target``."""

    target: str
    url: str
    _runner: web.AppRunner | None

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class RateLimitedFront(_Front):
    """An upstream in front of distribution that can be told to answer 429 to everything."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.limited = False
        self.url = ""
        self._runner: web.AppRunner | None = None
        self.remaining = 100

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        # Docker Hub's headers: the pulls allowed per window of w seconds, and those left.
        self.remaining -= 1
        quota = {"RateLimit-Limit": "100;w=21600",
                 "RateLimit-Remaining": f"{self.remaining};w=21600"}
        if self.limited:
            return web.json_response({"errors": [{"code": "TOOMANYREQUESTS"}]}, status=429,
                                     headers={"Retry-After": "30", **quota})
        async with aiohttp.ClientSession() as session, session.request(
                request.method, f"{self.target}{request.rel_url}",
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
                allow_redirects=False) as r:
            body = await r.read()
            headers = {k: v for k, v in r.headers.items()
                       if k.lower() not in ("content-length", "transfer-encoding",
                                            "connection", "content-encoding")}
            return web.Response(status=r.status, body=body, headers={**headers, **quota})


async def test_rate_limited_upstream(upstream: EmulatorProcess, hub: ReferenceRegistry,
                                     http: aiohttp.ClientSession, tmp_path: Path) -> None:
    front = await RateLimitedFront(hub.url).start()
    try:
        _digest, manifest, _layers = await _push(http, hub.url, "library/limited", "v1")
        config = _mirror_config(front.url, tag_ttl_seconds=0)
        with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
            await _pull(http, gw.url, "library/limited", "v1")
            await ecr_image(upstream, "docker-hub/library/limited", "v1")
            front.limited = True
            body, _blobs = await _pull(http, gw.url, "library/limited", "v1")
            assert body == manifest  # cached: served despite the 429
            async with http.get(f"{gw.url}/v2/library/uncached/manifests/v1", params=NS) as r:
                assert r.status == 429
                assert (await r.json())["errors"][0]["code"] == "TOOMANYREQUESTS"
                assert r.headers["Retry-After"] == "30"
            async with http.get(f"{gw.url}/metrics") as r:
                metrics = await r.text()
            assert 'ecr_gateway_pullthrough_events_total{event="stale",registry="docker.io"}' \
                in metrics
            # What the upstream said of its rate limit, per registry (never a URL).
            assert 'ecr_gateway_pullthrough_ratelimit_limit{registry="docker.io"} 100.0' in metrics
            window = 'ecr_gateway_pullthrough_ratelimit_window_seconds{registry="docker.io"}'
            assert f"{window} 21600.0" in metrics
            remaining = f'ecr_gateway_pullthrough_ratelimit_remaining{{registry="docker.io"}} ' \
                        f'{float(front.remaining)}'
            assert remaining in metrics
            assert 'ecr_gateway_pullthrough_throttled_total{registry="docker.io"} 2.0' in metrics
            assert 'ecr_gateway_pullthrough_retry_after_seconds{registry="docker.io"} 30.0' \
                in metrics
            assert front.url not in metrics
            # The access log names the requests that filled, revalidated or went stale.
            manifests = [(e["status"], e["pullthrough"])
                         for e in await _access(gw, "/manifests/", 3)]
            assert manifests == [(200, ["fetched"]), (200, ["stale"]),
                                 (429, ["rate_limited"])]
            blobs = [e["pullthrough"] for e in gw.access_log() if "/blobs/" in e["path"]]
            assert ["streamed"] in blobs
    finally:
        await front.stop()


async def test_route_pulls_through(upstream: EmulatorProcess, hub: ReferenceRegistry,
                                   http: aiohttp.ClientSession, tmp_path: Path) -> None:
    """A route with an upstream: every name under its prefix is filled from that registry
    (asked for without the prefix), with no mirror client and no ns; other routes are not."""
    digest, manifest, layers = await _push(http, hub.url, "library/routed", "v1")
    config = {"routes": [{"prefix": "hub", "repository_prefix": "hub-cache",
                          "upstream": {"url": hub.url}},
                         {"prefix": "hub/local", "repository_prefix": "local"},
                         {"prefix": "", "repository_prefix": "team"}]}
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
        body, blobs = await _pull(http, gw.url, "hub/library/routed", "v1", {})
        assert body == manifest and blobs[1:] == layers
        image = await ecr_image(upstream, "hub-cache/library/routed", "v1")
        assert image["imageId"]["imageDigest"] == digest
        body, blobs = await _pull(http, gw.url, "hub/library/routed", digest, {})
        assert body == manifest and blobs[1:] == layers
        assert _hub_reads(hub, digest_of(layers[0])) == 1
        # A longer route without an upstream, and the catch-all, serve what ECR holds only.
        for name in ("hub/local/library/routed", "library/routed"):
            async with http.get(f"{gw.url}/v2/{name}/manifests/v1",
                                headers={"Accept": OCI_MANIFEST}) as r:
                assert r.status == 404, name
        filled = [e["pullthrough"] for e in await _access(gw, "/manifests/", 4)]
        assert filled == [["fetched"], [], [], []]
        # What a client pushes under the route is served from ECR (the upstream has no such
        # tag), not refused because the upstream does not know it.
        _own, pushed, own_layers = await _push(http, gw.url, "hub/team/own", "v1")
        body, blobs = await _pull(http, gw.url, "hub/team/own", "v1", {})
        assert body == pushed and blobs[1:] == own_layers
        async with http.get(f"{gw.url}/metrics") as r:
            metrics = await r.text()
        host = hub.url.removeprefix("http://")
        assert f'ecr_gateway_pullthrough_events_total{{event="fetched",registry="{host}"}}' \
            in metrics


async def test_token_auth_upstream(upstream: EmulatorProcess, http: aiohttp.ClientSession,
                                   tmp_path: Path) -> None:
    """The upstream is another ecr-gateway with htpasswd users and the docker token flow."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("puller:" + bcrypt.hashpw(b"pull-secret", bcrypt.gensalt(4)).decode()
                        + "\n")
    source_config = {"auth": {"mode": "htpasswd", "htpasswd_file": str(htpasswd),
                              "rules": [{"repository": "**", "users": ["puller"],
                                         "actions": ["pull", "push"]}]},
                     "routes": [{"prefix": "", "repository_prefix": "source"}],
                     # Its blobs from itself: in redirect mode it would send them to the
                     # emulator's plain-http loopback address, a redirect no upstream may
                     # lead the gateway to.
                     "blobs": {"mode": "proxy"}}
    with GatewayProcess(tmp_path / "source", source_config,
                        upstream_url=upstream.url) as source:
        basic = {"Authorization": aiohttp.encode_basic_auth("puller", "pull-secret")}
        async with aiohttp.ClientSession(headers=basic) as pusher:
            _digest, manifest, layers = await _push(pusher, source.url, "team/app", "v1")
        password = tmp_path / "password"
        password.write_text("pull-secret\n")
        config = {"mirrors": {"registry.example.com": {
            "repository_prefix": "example",
            "upstream": {"url": source.url, "username": "puller",
                         "password_file": str(password)}}}}
        with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
            body, blobs = await _pull(http, gw.url, "team/app", "v1",
                                      {"ns": "registry.example.com"})
            assert body == manifest and blobs[1:] == layers
            await ecr_image(upstream, "example/team/app", "v1")
            assert not any("pull-secret" in line for line in gw.log_lines)
        challenged = [e for e in source.access_log() if e["status"] == 401]
        assert challenged  # the token flow really ran


@pytest.mark.parametrize(("settings", "where"), [
    (_mirror_config("http://registry.example.com"), "mirrors.docker.io.upstream.url"),
    ({"routes": [{"prefix": "hub", "upstream": {"url": "http://registry.example.com"}}]},
     "routes[0].upstream.url"),
])
def test_bad_upstream_configuration_is_refused(tmp_path: Path, settings: dict[str, Any],
                                               where: str) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps(settings))
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert where in result.stderr
    assert "loopback" in result.stderr


def test_a_route_filling_other_routes_repositories_is_refused(tmp_path: Path) -> None:
    """A route with an upstream and no repository_prefix of its own fills the repositories
    of the catch-all every other name goes to: a caller allowed to pull hub/team/app:prod
    would have the upstream's team/app:prod replace the image the team pushed as
    team/app:prod. check-config (and serve, which loads it alike) refuses it."""
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"routes": [{"prefix": "hub",
                                              "upstream": {"url": "http://127.0.0.1:5000"}}]}))
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout
    assert "routes[0].repository_prefix" in result.stderr
    assert "the catch-all" in result.stderr and "alone" in result.stderr


class SlowFront(_Front):
    """An upstream in front of distribution that sends blob bodies slowly (``piece`` bytes
    every ``pause`` seconds), counts their reads, and flips a byte of the blobs in
    ``corrupt``."""

    def __init__(self, target: str, piece: int = 64 * 1024, pause: float = 0.05) -> None:
        self.target = target
        self.piece = piece
        self.pause = pause
        self.corrupt: set[str] = set()
        self.blob_reads: dict[str, int] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        async with aiohttp.ClientSession(auto_decompress=False) as session, session.request(
                request.method, f"{self.target}{request.rel_url}",
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
                allow_redirects=False) as r:
            body = await r.read()  # small test blobs
            headers = {k: v for k, v in r.headers.items()
                       if k.lower() not in ("content-length", "transfer-encoding",
                                            "connection", "content-encoding")}
            if request.method != "GET" or "/blobs/" not in request.path or r.status != 200:
                return web.Response(status=r.status, body=body, headers=headers)
        digest = request.path.rsplit("/", 1)[1]
        self.blob_reads[digest] = self.blob_reads.get(digest, 0) + 1
        if digest in self.corrupt:
            middle = len(body) // 2
            body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]
        response = web.StreamResponse(status=200, headers=headers)
        response.content_length = len(body)
        await response.prepare(request)
        for start in range(0, len(body), self.piece):
            await response.write(body[start:start + self.piece])
            await asyncio.sleep(self.pause)
        await response.write_eof()
        return response


async def _manifest(http: aiohttp.ClientSession, base: str, name: str, tag: str) -> None:
    async with http.get(f"{base}/v2/{name}/manifests/{tag}", params=NS,
                        headers={"Accept": OCI_MANIFEST}) as r:
        assert r.status == 200, (r.status, await r.text())


async def _ecr_holds(ecr: Any, repository: str, digest: str) -> bool:
    answer = await ecr.batch_check_layer_availability(repositoryName=repository,
                                                      layerDigests=[digest])
    return any(layer["layerDigest"] == digest and layer["layerAvailability"] == "AVAILABLE"
               for layer in answer["layers"])


@pytest.mark.parametrize("proxy", [False, True], ids=["redirect", "proxy with a cache"])
async def test_cold_blob_streams_while_its_copy_into_ecr_proceeds(
        upstream: EmulatorProcess, hub: ReferenceRegistry, http: aiohttp.ClientSession,
        tmp_path: Path, proxy: bool) -> None:
    """Clients of a slow upstream get the first bytes while ECR does not hold the blob yet
    (before: only once CompleteLayerUpload was done), byte for byte; four of them still cost
    one upstream read and one ECR upload. With a blob cache, none waits for another's read
    to fill it (before: three of the four got nothing until the first had it all)."""
    front = await SlowFront(hub.url).start()
    name = f"library/slow-{'proxy' if proxy else 'redirect'}"
    blobs = {"blobs": {"mode": "proxy", "cache": {"path": str(tmp_path / "cache")}}}
    try:
        _digest, _manifest_body, layers = await _push(http, hub.url, name, "v1",
                                                      sizes=(2_000_000, 1234))
        layer = digest_of(layers[0])
        with GatewayProcess(tmp_path / "gw", {**_mirror_config(front.url),
                                              **(blobs if proxy else {})},
                            upstream_url=upstream.url) as gw:
            async with ecr_client(upstream.url) as ecr:
                await _manifest(http, gw.url, name, "v1")

                async def read() -> tuple[bytes, bool, float, float]:
                    started = asyncio.get_running_loop().time()
                    async with http.get(f"{gw.url}/v2/{name}/blobs/{layer}",
                                        params=NS) as r:
                        assert r.status == 200, (r.status, await r.text())
                        first = await r.content.readany()
                        first_at = asyncio.get_running_loop().time() - started
                        held = await _ecr_holds(ecr, f"docker-hub/{name}", layer)
                        body = first + await r.read()
                    return body, held, first_at, asyncio.get_running_loop().time() - started

                reads = await asyncio.gather(*(read() for _ in range(4)))
                for body, held_at_first_byte, first_at, total in reads:
                    assert body == layers[0]
                    assert not held_at_first_byte, "the first bytes waited for ECR's copy"
                    assert first_at < total / 2, (first_at, total)
                await ecr_image(upstream, f"docker-hub/{name}", "v1")
                assert await _ecr_holds(ecr, f"docker-hub/{name}", layer)
        assert front.blob_reads[layer] == 1
        completes = [r for r in upstream.requests("CompleteLayerUpload")
                     if r.get("repository") == f"docker-hub/{name}"]
        assert len(completes) == 3, completes  # the two layers and the config
    finally:
        await front.stop()


async def test_corrupted_upstream_blob_never_reaches_a_client_nor_ecr(
        upstream: EmulatorProcess, hub: ReferenceRegistry, http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    front = await SlowFront(hub.url, pause=0.01).start()
    try:
        _digest, _manifest_body, layers = await _push(http, hub.url, "library/flipped", "v1",
                                                      sizes=(1_000_000, 1234))
        layer = digest_of(layers[0])
        front.corrupt.add(layer)
        with GatewayProcess(tmp_path / "gw", _mirror_config(front.url),
                            upstream_url=upstream.url) as gw:
            await _manifest(http, gw.url, "library/flipped", "v1")
            for _ in range(2):  # streamed from the tee, then again after the copy failed
                received = b""
                try:
                    async with http.get(f"{gw.url}/v2/library/flipped/blobs/{layer}",
                                        params=NS) as r:
                        async for chunk in r.content.iter_any():
                            received += chunk
                        complete = r.status == 200
                except aiohttp.ClientPayloadError:
                    complete = False
                assert not complete, "a complete body of wrong bytes was sent"
                assert len(received) < len(layers[0])
                deadline = asyncio.get_running_loop().time() + 20
                while not any("not stored in ECR" in line for line in gw.log_lines):
                    assert asyncio.get_running_loop().time() < deadline, gw.log_lines[-20:]
                    await asyncio.sleep(0.1)
            async with ecr_client(upstream.url) as ecr:
                assert not await _ecr_holds(ecr, "docker-hub/library/flipped", layer)
                images = await ecr.describe_images(repositoryName="docker-hub/library/flipped")
                assert images["imageDetails"] == []
        completes = [r for r in upstream.requests("CompleteLayerUpload")
                     if r.get("repository") == "docker-hub/library/flipped"]
        assert len(completes) <= 2, completes  # the others at most, never the flipped one
    finally:
        await front.stop()


def _links(path: Path) -> int:
    try:
        return path.stat().st_nlink
    except FileNotFoundError:
        return 0


async def test_a_fill_writes_each_blob_to_the_disk_once(
        upstream: EmulatorProcess, hub: ReferenceRegistry, http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    """The spool a fill verified is also its upload's staged copy (readable until the image
    is in ECR) and, in proxy mode, the blob cache's copy: one file, linked, not rewritten."""
    cache = tmp_path / "blobs"
    config = {**_mirror_config(hub.url),
              "blobs": {"mode": "proxy", "cache": {"path": str(cache)}}}
    digest, manifest, layers = await _push(http, hub.url, "library/once", "v1",
                                           sizes=(3_000_000, 1234))
    hexes = [digest_of(layer).partition(":")[2] for layer in layers]
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gateway:
        staged = gateway.data_dir / "staging" / "blobs" / "sha256"
        # The image goes into ECR late, so the staged copies are still there to look at.
        faults_admin(upstream, "POST", {"action": "PutImage", "latency": 3.0, "count": 1})
        try:
            body, blobs = await _pull(http, gateway.url, "library/once", "v1")
            assert body == manifest and blobs[1:] == layers
            # The upload's own spool is a third name of the file until its session is gone.
            for _ in range(100):
                if all(_links(staged / h) == 2 for h in hexes):
                    break
                await asyncio.sleep(0.02)
            for h in hexes:
                kept, cached = (staged / h).stat(), (cache / "sha256" / h).stat()
                assert (kept.st_ino, kept.st_nlink) == (cached.st_ino, 2), h
        finally:
            faults_admin(upstream, "DELETE")
        await _until_stored(gateway, f"docker.io/library/once:v1: stored in ECR as {digest}")
        assert not any((staged / h).exists() for h in hexes)  # ECR serves them now


async def _repository_exists(upstream: EmulatorProcess, repository: str) -> bool:
    async with ecr_client(upstream.url) as ecr:
        try:
            await ecr.describe_repositories(repositoryNames=[repository])
        except ecr.exceptions.RepositoryNotFoundException:
            return False
    return True


@pytest.mark.parametrize("proxy", [False, True], ids=["redirect", "proxy with a cache"])
async def test_new_repositories_past_the_bound_are_served_not_stored(
        upstream: EmulatorProcess, hub: ReferenceRegistry, http: aiohttp.ClientSession,
        tmp_path: Path, proxy: bool) -> None:
    """Each distinct image pulled through is one more ECR repository (the account's quota is
    10,000 a region): past max_new_repositories_per_hour an image whose repository ECR does
    not hold is served from the upstream, byte for byte, and nothing of it is written into
    ECR (before: a client pulling many public images made one repository each). Fills into
    repositories that exist are not bounded, after a restart too."""
    names = {n: f"library/quota-{n}-{'proxy' if proxy else 'redirect'}" for n in "abcd"}
    images = {n: await _push(http, hub.url, name, "v1") for n, name in names.items()}
    config = _mirror_config(hub.url, max_new_repositories_per_hour=1)
    if proxy:
        config["blobs"] = {"mode": "proxy", "cache": {"path": str(tmp_path / "cache")}}
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
        digest, manifest, layers = images["a"]
        body, blobs = await _pull(http, gw.url, names["a"], "v1")
        assert body == manifest and blobs[1:] == layers
        await ecr_image(upstream, f"docker-hub/{names['a']}", "v1")

        # B: by tag, by digest, and by tag again once its first fill gave up.
        digest, manifest, layers = images["b"]
        for reference in ("v1", digest, "v1"):
            body, blobs = await _pull(http, gw.url, names["b"], reference)
            assert body == manifest and blobs[1:] == layers, reference
            async with http.head(f"{gw.url}/v2/{names['b']}/blobs/{digest_of(layers[0])}",
                                 params=NS) as r:
                assert r.status == 200 and r.content_length == len(layers[0])
        warned = await gw.logged("max_new_repositories_per_hour")
        assert not await _repository_exists(upstream, f"docker-hub/{names['b']}")
        written = [r["action"] for r in upstream.requests()
                   if r.get("repository") == f"docker-hub/{names['b']}"]
        assert not {"CreateRepository", "InitiateLayerUpload", "PutImage"} & set(written)
        assert warned, gw.log_lines[-20:]
        line = next(line for line in gw.log_lines if "max_new_repositories_per_hour" in line)
        assert f"docker.io/{names['b']}" in line and hub.url not in line
        async with http.get(f"{gw.url}/metrics") as r:
            metrics = await r.text()
        assert 'ecr_gateway_pullthrough_events_total{event="repositories_full",' \
            'registry="docker.io"}' in metrics

        # A new tag of A: its repository exists, the fill takes nothing of the bound.
        digest, manifest, layers = await _push(http, hub.url, names["a"], "v2")
        body, blobs = await _pull(http, gw.url, names["a"], "v2")
        assert body == manifest and blobs[1:] == layers
        image = await ecr_image(upstream, f"docker-hub/{names['a']}", "v2")
        assert image["imageId"]["imageDigest"] == digest

        # After a restart: a fill into A finds its repository (ECR: "already exists") and
        # gives the unit back, so C is created; D is then past the bound, and a fill into A
        # once the bound is reached asks ECR whether the repository exists, and goes on.
        gw.restart()
        for n, tag in (("a", "v3"), ("c", "v1"), ("d", "v1"), ("a", "v4")):
            if n == "a":
                digest, manifest, layers = await _push(http, hub.url, names["a"], tag)
            else:
                digest, manifest, layers = images[n]
            body, blobs = await _pull(http, gw.url, names[n], tag)
            assert body == manifest and blobs[1:] == layers, n
            if n != "d":
                image = await ecr_image(upstream, f"docker-hub/{names[n]}", tag)
                assert image["imageId"]["imageDigest"] == digest
        assert await gw.logged(f"docker.io/{names['d']}: served from the upstream")
        assert not await _repository_exists(upstream, f"docker-hub/{names['d']}")
