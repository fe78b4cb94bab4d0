"""The shared endpoint as shipped (deploy/kubernetes/overlays/shared), on one machine.

Three ``ecr-gateway serve`` replicas with the overlay's own config.yaml (htpasswd users, one
token-signing key, routes and rules; only paths, ports and addresses changed), sharing a
redis-server that requires a password (``state.redis_password_file``, ``--requirepass``),
each reachable by the others at ``state.peer_url`` as the Deployment sets it; nginx in front
as the Service and ingress are: round-robin per request, no affinity, no upstream keepalive,
bodies streamed (every request may land on another replica). One ECR emulator with
credentials behind them. Real clients drive it: docker (login, push, pull through nginx and
from every replica directly), skopeo (copy in and out, inspect) and the distribution-spec
workflow tests of tests/integration/spec, pointed at nginx with the overlay's login.

Then the failures a Deployment sees: one replica killed with SIGKILL while it receives a
layer (docker retries as it does; nginx marks the dead replica down; the replica comes back
on its data dir), and Redis restarted under the replicas (it keeps nothing, like the
overlay's Redis: upload sessions in flight end with an OCI error and a retry succeeds,
nothing acknowledged is lost).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.auth.helpers import write_htpasswd
from tests.integration.spec import test_discovery, test_management, test_pull, test_push
from tests.integration.spec.conftest import OciClient as SpecClient
from tests.support.clients import Docker, Skopeo, free_ports, run
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.images import docker_archive, layout_ref, oci_layout, read_docker_save
from tests.support.nginx import Nginx
from tests.support.redis import RedisServer

pytestmark = pytest.mark.e2e

OVERLAY = Path(__file__).resolve().parents[2] / "deploy/kubernetes/overlays/shared"
MiB = 1024 * 1024
OCTET = {"Content-Type": "application/octet-stream"}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Shape:
    replicas: list[GatewayProcess]
    nginx: Nginx
    redis: RedisServer
    user: str
    password: str

    @property
    def login(self) -> dict[str, str]:
        return {"Authorization": aiohttp.encode_basic_auth(self.user, self.password)}

    def bases(self) -> list[str]:
        """The balancer first, then every replica directly."""
        return [self.nginx.url, *(replica.url for replica in self.replicas)]

    def replica_hosts(self) -> set[str]:
        return {replica.host for replica in self.replicas}


def _overlay_config(folder: Path, realm: str, redis: RedisServer,
                    metrics_port: int) -> dict[str, Any]:
    """The overlay's config.yaml with this machine's paths, ports and addresses."""
    config: dict[str, Any] = yaml.safe_load((OVERLAY / "config.yaml").read_text())
    config.pop("listen")  # each replica gets --listen and --data-dir
    config.pop("data_dir")
    config["metrics_listen"] = f"127.0.0.1:{metrics_port}"
    config["trusted_proxies"] = ["127.0.0.1"]  # nginx connects from here
    config["auth"]["htpasswd_file"] = str(folder / "htpasswd")
    config["auth"]["token"].update({"realm": realm,
                                    "signing_key_file": str(folder / "signing-key.pem")})
    config["state"].update({"redis_url": redis.url,
                            "redis_password_file": str(folder / "redis-password")})
    return config


def _split(ports: list[int]) -> tuple[list[int], list[int]]:
    """The replicas' ports and their metrics listeners' ports."""
    half = len(ports) // 2
    return ports[:half], ports[half:]


@pytest.fixture(scope="module")
def shape(upstream: EmulatorProcess,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shape]:
    root = tmp_path_factory.mktemp("shipped")
    secrets_dir = root / "secrets"  # the Secrets ecr-gateway-auth and ecr-gateway-redis
    secrets_dir.mkdir()
    user, password = "ci-robot", secrets.token_urlsafe(12)  # the overlay's ci group
    write_htpasswd(secrets_dir / "htpasswd", {user: password})
    key = ec.generate_private_key(ec.SECP256R1())
    (secrets_dir / "signing-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    redis_password = secrets.token_hex(16)
    (secrets_dir / "redis-password").write_text(redis_password + "\n")
    # Chosen together: a port picked while the others were not yet bound could come twice.
    ports, metrics_ports = _split(free_ports(6))
    nginx = Nginx(root / "nginx", [f"127.0.0.1:{port}" for port in ports])
    replicas: list[GatewayProcess] = []
    with RedisServer(root / "redis", password=redis_password) as redis:
        try:
            for number, port in enumerate(ports):
                config = _overlay_config(secrets_dir, f"{nginx.url}/token", redis,
                                         metrics_ports[number])
                # The Deployment's ECR_GATEWAY_STATE__PEER_URL (http://$(POD_IP):5000).
                replica = GatewayProcess(root / f"replica{number}", config,
                                         upstream_url=upstream.url,
                                         env={"ECR_GATEWAY_STATE__PEER_URL":
                                              f"http://127.0.0.1:{port}"})
                replica.port = port
                replicas.append(replica.start())
            nginx.start()
            yield Shape(replicas, nginx, redis, user, password)
        finally:
            nginx.stop()
            for replica in replicas:
                replica.stop()
            leaked = [line for replica in replicas for line in replica.log_lines
                      if password in line or redis_password in line]
            assert not leaked, leaked[:3]


@pytest.fixture(scope="module")
def gateway(shape: Shape) -> GatewayProcess:
    """The module's gateway for the shared e2e fixtures (dockerd): the first replica."""
    return shape.replicas[0]


@pytest.fixture
def repo() -> str:
    """A repository the overlay's routes create on push and its ci group may write."""
    return f"ci/{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def session(shape: Shape) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=shape.login, auto_decompress=False) as client:
        yield client


@pytest.fixture
async def oci(session: aiohttp.ClientSession, shape: Shape) -> SpecClient:
    """The distribution-spec workflow tests' client, on the balancer, logged in."""
    return SpecClient(session, shape.nginx.url)


# -- the distribution-spec workflows (tests/integration/spec), through the balancer --------

# The overlay's rules let ci-robot delete only under ci/: elsewhere 403 DENIED comes first.
_NOT_UNDER_THESE_RULES = {"test_delete_manifest_in_unknown_repository"}


def _spec_tests() -> dict[str, Any]:
    """The workflow tests that need only a client, a repository and the emulator."""
    found = {}
    for module in (test_pull, test_push, test_discovery, test_management):
        for name, function in vars(module).items():
            if name.startswith("test_") and name not in _NOT_UNDER_THESE_RULES and \
                    inspect.iscoroutinefunction(function) and set(
                    inspect.signature(function).parameters) <= {"oci", "repo", "upstream"}:
                found[f"test_spec_{name.removeprefix('test_')}"] = function
    return found


globals().update(_spec_tests())


# -- helpers ----------------------------------------------------------------------------------

async def _upload(session: aiohttp.ClientSession, base: str, name: str, data: bytes,
                  chunks: int = 1) -> str:
    """POST, ``chunks`` PATCHes, PUT: each request through ``base`` (the balancer spreads
    them); returns the digest."""
    digest = digest_of(data)
    async with session.post(f"{base}/v2/{name}/blobs/uploads/") as r:
        assert r.status == 202, await r.text()
        location = r.headers["Location"]
    step = -(-len(data) // chunks)
    for offset in range(0, len(data), step):
        piece = data[offset:offset + step]
        headers = {**OCTET, "Content-Range": f"{offset}-{offset + len(piece) - 1}"}
        async with session.patch(_absolute(base, location), data=piece, headers=headers) as r:
            assert r.status == 202, await r.text()
            location = r.headers["Location"]
    sep = "&" if "?" in location else "?"
    async with session.put(f"{_absolute(base, location)}{sep}digest={digest}",
                           headers=OCTET) as r:
        assert r.status == 201, await r.text()
    return digest


def _absolute(base: str, location: str) -> str:
    # The gateway answers relative Locations: the client resolves them against the address
    # it used, so they never name a replica behind the balancer.
    assert not location.startswith("http"), location
    return base + location


async def _read_everywhere(session: aiohttp.ClientSession, shape: Shape, name: str,
                           digest: str, data: bytes) -> None:
    """HEAD and GET of a blob through the balancer and from every replica agree."""
    for base in shape.bases():
        url = f"{base}/v2/{name}/blobs/{digest}"
        async with session.head(url) as head:
            assert head.status == 200, (base, head.status)
            assert head.headers["Content-Length"] == str(len(data)), base
        async with session.get(url) as got:
            body = await got.read()
            assert got.status == 200, (base, got.status, body[:300])
            assert digest_of(body) == digest, base


async def _push_manifest(session: aiohttp.ClientSession, base: str, name: str, tag: str,
                         layers: list[bytes]) -> str:
    config = f'{{"architecture":"amd64","os":"linux","n":"{uuid.uuid4().hex}"}}'.encode()
    descriptors = []
    for blob in [config, *layers]:
        descriptors.append({"digest": await _upload(session, base, name, blob),
                            "size": len(blob)})
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           **descriptors[0]},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            **descriptor} for descriptor in descriptors[1:]]}
    body = json.dumps(manifest).encode()
    async with session.put(f"{base}/v2/{name}/manifests/{tag}", data=body, headers={
            "Content-Type": "application/vnd.oci.image.manifest.v1+json"}) as r:
        assert r.status == 201, await r.text()
    return digest_of(body)


def _docker_login(docker: Docker, host: str, shape: Shape) -> None:
    result = run([docker.binary, "login", "-u", shape.user, "--password-stdin", host],
                 env=docker.env, input=shape.password)
    assert "Login Succeeded" in result.stdout, result.stdout + result.stderr


# -- scenarios --------------------------------------------------------------------------------

async def test_login_challenge_and_locations_through_the_balancer(shape: Shape) -> None:
    """The challenge names the overlay's realm (the balancer's address, on whichever replica
    answers); a token one replica issued is valid on the others."""
    async with aiohttp.ClientSession() as anonymous:
        for _ in range(3):
            async with anonymous.get(f"{shape.nginx.url}/v2/") as r:
                assert r.status == 401
                challenge = r.headers["WWW-Authenticate"]
                assert f'realm="{shape.nginx.url}/token"' in challenge, challenge
        async with anonymous.get(f"{shape.nginx.url}/token",
                                 params={"service": "ecr-gateway",
                                         "scope": "repository:ci/app:pull,push"},
                                 headers=shape.login) as r:
            assert r.status == 200, await r.text()
            token = (await r.json())["token"]
        for replica in shape.replicas:
            async with anonymous.get(f"{replica.url}/v2/",
                                     headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200, (replica.url, await r.text())


async def test_unreferenced_blobs_read_back_from_every_replica(
        session: aiohttp.ClientSession, shape: Shape, repo: str) -> None:
    """Blobs just uploaded (no manifest yet) through the balancer, whole or in PATCHes
    that land on different replicas, answer HEAD and GET the same everywhere."""
    blobs = [os.urandom(3 * MiB + 17), os.urandom(12 * MiB + 3), os.urandom(2000)]
    shapes = [1, 4, 3]  # chunked: every PATCH may go to another replica
    for blob, chunks in zip(blobs, shapes, strict=True):
        digest = await _upload(session, shape.nginx.url, repo, blob, chunks)
        await _read_everywhere(session, shape, repo, digest, blob)


async def test_mount_and_deletes_seen_by_every_replica(
        session: aiohttp.ClientSession, shape: Shape, repo: str) -> None:
    base = shape.nginx.url
    layer = os.urandom(1 * MiB + 5)
    digest = await _upload(session, base, repo, layer)
    target = f"{repo}-mounted"
    async with session.post(f"{base}/v2/{target}/blobs/uploads/",
                            params={"mount": digest, "from": repo}) as r:
        assert r.status == 201, await r.text()
        assert r.headers["Location"] == f"/v2/{target}/blobs/{digest}"
    await _read_everywhere(session, shape, target, digest, layer)
    manifest = await _push_manifest(session, base, target, "v1", [layer])
    await _push_manifest(session, base, target, "keep", [layer])
    # Tag delete: gone from every replica's tag list at once (cache notices), image kept.
    for base_url in shape.bases():  # fill every replica's caches first
        async with session.get(f"{base_url}/v2/{target}/tags/list") as r:
            assert "v1" in (await r.json())["tags"]
    async with session.delete(f"{base}/v2/{target}/manifests/v1") as r:
        assert r.status == 202, await r.text()
    for base_url in shape.bases():
        async with session.get(f"{base_url}/v2/{target}/tags/list") as r:
            assert "v1" not in (await r.json())["tags"], base_url
        async with session.head(f"{base_url}/v2/{target}/manifests/{manifest}", headers={
                "Accept": "application/vnd.oci.image.manifest.v1+json"}) as r:
            assert r.status == 200, base_url
    # Delete by digest: unknown everywhere.
    async with session.delete(f"{base}/v2/{target}/manifests/{manifest}") as r:
        assert r.status == 202, await r.text()
    for base_url in shape.bases():
        async with session.get(f"{base_url}/v2/{target}/manifests/{manifest}", headers={
                "Accept": "application/vnd.oci.image.manifest.v1+json"}) as r:
            assert r.status == 404, base_url
            assert (await r.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_docker_push_and_pull_through_the_balancer_and_every_replica(
        shape: Shape, docker: Docker, tmp_path: Path) -> None:
    ref = f"{shape.nginx.host}/ci/docker-{uuid.uuid4().hex[:8]}:v1"
    archive = docker_archive(tmp_path / "image.tar", [6 * MiB, 2048], ref)
    docker("load", "-i", str(archive.path))
    _docker_login(docker, shape.nginx.host, shape)
    docker("push", ref)
    docker("rmi", ref)
    docker("pull", ref)
    docker("save", "-o", str(tmp_path / "back.tar"), ref)
    _, layers, config = read_docker_save(tmp_path / "back.tar", tmp_path / "back")
    assert layers == archive.diff_ids and config == archive.image_id
    docker("rmi", ref)
    for replica in shape.replicas:
        direct = ref.replace(shape.nginx.host, replica.host)
        _docker_login(docker, replica.host, shape)
        docker("pull", direct)
        docker("rmi", direct)
    # nginx spread the requests over every replica.
    assert {u for *_, tried in shape.nginx.served() for u in tried} == shape.replica_hosts()


def test_skopeo_copy_in_and_out_and_inspect_everywhere(
        shape: Shape, skopeo: Skopeo, tmp_path: Path) -> None:
    image = oci_layout(tmp_path / "in", "v1", [5 * MiB, 4096])
    name = f"ci/skopeo-{uuid.uuid4().hex[:8]}"
    creds = f"{shape.user}:{shape.password}"
    skopeo.copy(f"oci:{tmp_path / 'in'}:v1", f"docker://{shape.nginx.host}/{name}:v1",
                "--dest-creds", creds)
    for base in shape.bases():
        host = base.removeprefix("http://")
        found = skopeo.inspect_json(f"docker://{host}/{name}:v1", "--creds", creds)
        assert found["Digest"] == image.digest, host
    skopeo.copy(f"docker://{shape.nginx.host}/{name}:v1", f"oci:{tmp_path / 'out'}:v1",
                "--src-creds", creds)
    assert layout_ref(tmp_path / "out", "v1")["digest"] == image.digest


# -- failures -----------------------------------------------------------------------------

def _spools(shape: Shape) -> set[Path]:
    return {spool for replica in shape.replicas
            for spool in (replica.data_dir / "staging" / "spool").glob("*")}


def _receiving(shape: Shape, before: set[Path], timeout: float = 60.0,
               at_least: int = 2 * MiB) -> GatewayProcess:
    """The replica with a new spool that is growing: it is in the middle of receiving a
    layer (spools in ``before`` were there already)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for replica in shape.replicas:
            for spool in (replica.data_dir / "staging" / "spool").glob("*"):
                if spool in before or spool.suffix == ".kept":  # a finished one, being kept
                    continue
                try:
                    if spool.stat().st_size >= at_least:
                        return replica
                except FileNotFoundError:
                    continue
        time.sleep(0.01)
    raise AssertionError("no replica received a layer")


def test_replica_killed_mid_push_the_push_completes_through_the_others(
        shape: Shape, docker: Docker, tmp_path: Path) -> None:
    ref = f"{shape.nginx.host}/ci/killed-{uuid.uuid4().hex[:8]}:v1"
    archive = docker_archive(tmp_path / "image.tar", [40 * MiB, 3 * MiB, 2048], ref)
    docker("load", "-i", str(archive.path))
    _docker_login(docker, shape.nginx.host, shape)
    spools = _spools(shape)
    push = subprocess.Popen([docker.binary, "push", ref], env={**os.environ, **docker.env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        victim = _receiving(shape, spools)
        before = len(shape.nginx.served())
        victim.kill9()
        output, _ = push.communicate(timeout=180)
    finally:
        if push.poll() is None:
            push.kill()
            push.communicate()
    assert push.returncode == 0, output
    after = shape.nginx.served()[before:]
    # Only requests the kill cut failed; the others went to the live replicas.
    failed = [entry for entry in after if entry[2] >= 500]
    assert failed and all(entry[3] == [victim.host] for entry in failed), (failed, output)
    victim.start()  # same port and data dir, as the Deployment restarts the pod
    docker("rmi", ref)
    for base in [shape.nginx.host, victim.host]:
        direct = ref.replace(shape.nginx.host, base)
        _docker_login(docker, base, shape)
        docker("pull", direct)
        docker("save", "-o", str(tmp_path / "back.tar"), direct)
        docker("rmi", direct)
        _, layers, config = read_docker_save(tmp_path / "back.tar", tmp_path / f"back-{base}")
        assert layers == archive.diff_ids and config == archive.image_id


async def test_redis_restarted_mid_upload(session: aiohttp.ClientSession, shape: Shape,
                                          repo: str, skopeo: Skopeo, tmp_path: Path) -> None:
    """Redis restarts empty (as the overlay's does). What was acknowledged stays: an image
    and a blob not yet referenced, read through every replica. An upload in flight ends with
    an OCI error, and a new one succeeds; a skopeo copy under way succeeds or fails with an
    OCI error, and then succeeds when run again."""
    base = shape.nginx.url
    layer = os.urandom(2 * MiB)
    manifest = await _push_manifest(session, base, repo, "before", [layer])
    staged = os.urandom(3 * MiB + 1)
    staged_digest = await _upload(session, base, repo, staged)
    blob = os.urandom(7 * MiB)
    async with session.post(f"{base}/v2/{repo}/blobs/uploads/") as r:
        assert r.status == 202, await r.text()
        location = r.headers["Location"]
    async with session.patch(base + location, data=blob[:MiB], headers={
            **OCTET, "Content-Range": f"0-{MiB - 1}"}) as r:
        assert r.status == 202, await r.text()
        location = r.headers["Location"]
    image = oci_layout(tmp_path / "in", "v1", [24 * MiB, 4096])
    creds = f"{shape.user}:{shape.password}"
    target = f"docker://{shape.nginx.host}/{repo}-skopeo:v1"
    spools = _spools(shape)
    copy = subprocess.Popen([skopeo.binary, "--policy", str(skopeo.policy), "copy",
                             "--dest-tls-verify=false", "--dest-creds", creds,
                             f"oci:{tmp_path / 'in'}:v1", target],
                            env={**os.environ, **skopeo.env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _receiving(shape, spools)
        shape.redis.stop()
        shape.redis.start()
        output, _ = copy.communicate(timeout=120)
    finally:
        if copy.poll() is None:
            copy.kill()
            copy.communicate()
    # The upload in flight lost its session: a clean OCI error, then a new upload succeeds.
    # (Its own connection: the answer comes before the body is sent, so it is not reused.)
    async with aiohttp.ClientSession(headers=shape.login,
                                     connector=aiohttp.TCPConnector(force_close=True)) as once:
        async with once.patch(base + location, data=blob[MiB:], headers={
                **OCTET, "Content-Range": f"{MiB}-{len(blob) - 1}"}) as r:
            assert r.status == 404, await r.text()
            assert (await r.json())["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    digest = await _upload(session, base, repo, blob, chunks=2)
    await _read_everywhere(session, shape, repo, digest, blob)
    if copy.returncode != 0:  # then with the gateway's OCI error, and a new run succeeds
        assert any(oci_error in output for oci_error in (
            "blob upload unknown", "blob upload invalid", "unavailable")), output
        skopeo.copy(f"oci:{tmp_path / 'in'}:v1", target, "--dest-creds", creds)
    found = skopeo.inspect_json(target, "--creds", creds)
    assert found["Digest"] == image.digest
    # Nothing acknowledged is lost.
    await _read_everywhere(session, shape, repo, staged_digest, staged)
    for base_url in shape.bases():
        async with session.get(f"{base_url}/v2/{repo}/manifests/{manifest}", headers={
                "Accept": "application/vnd.oci.image.manifest.v1+json"}) as r:
            assert r.status == 200, base_url
        async with session.get(f"{base_url}/readyz") as r:
            assert r.status == 200, (base_url, await r.text())
