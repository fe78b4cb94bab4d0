"""Who may change what a mirror serves: ``?ns=`` never retargets a write, pushes into an ECR
repository a mirror serves need a rule naming that ECR repository, and mirrors ask for
credentials unless configured otherwise.

One emulator; ``docker-hub/library/nginx`` in it is what every containerd node pulls as
docker.io/library/nginx. ``pusher`` may push ``library/**`` and ``hub/**`` (the ``hub``
route maps onto ``docker-hub/``) but holds no grant on the ECR repositories ``docker-hub/**``;
``seeder`` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.auth.helpers import basic, token_for, write_htpasswd
from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.oci import OCI_MANIFEST, OciClient, digest_of

MIRRORED = "docker-hub/library/nginx"
PASSWORDS = {"pusher": "pusher-pw", "seeder": "seeder-pw", "node": "node-pw"}
RULES: list[dict[str, Any]] = [
    {"ecr_repository": "docker-hub/**", "users": ["seeder"], "actions": ["pull", "push"]},
    {"repository": "library/**", "users": ["pusher", "seeder"],
     "actions": ["pull", "push", "delete"]},
    {"repository": "hub/**", "users": ["pusher", "seeder"], "actions": ["pull", "push"]},
    {"repository": "**", "users": ["*"], "actions": ["pull"]},
]
PUSHER, SEEDER, NODE = (basic(user, password) for user, password in PASSWORDS.items())


@pytest.fixture(scope="module")
def secured(upstream: EmulatorProcess,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    htpasswd = write_htpasswd(tmp_path_factory.mktemp("users") / "htpasswd", PASSWORDS)
    config = {
        "auth": {"mode": "htpasswd", "htpasswd_file": str(htpasswd), "rules": RULES},
        "mirrors": {"docker.io": {"repository_prefix": "docker-hub"}},
        "routes": [{"prefix": ""}, {"prefix": "hub", "repository_prefix": "docker-hub"}],
    }
    with GatewayProcess(tmp_path_factory.mktemp("gw"), config,
                        upstream_url=upstream.url) as gateway:
        yield gateway


@pytest.fixture
async def seeded(gateway: GatewayProcess) -> str:
    """docker.io/library/nginx:latest as the mirror serves it (pushed without auth, as an
    ECR pull-through cache would fill it; the same image each time); its digest."""
    async with aiohttp.ClientSession() as session:
        digest, _ = await OciClient(session, gateway.url).push_image(
            MIRRORED, "latest", [b"genuine nginx layer" * 50])
    return digest


async def _images(upstream: EmulatorProcess, repository: str) -> list[tuple[str, list[str]]]:
    """The images of an ECR repository as ECR itself lists them: (digest, tags)."""
    async with ecr_client(upstream.url) as ecr:
        answer = await ecr.describe_images(repositoryName=repository)
    return sorted((d["imageDigest"], sorted(d.get("imageTags", [])))
                  for d in answer["imageDetails"])


def _writes(upstream: EmulatorProcess, repository: str) -> list[str]:
    reads = {"BatchGetImage", "BatchCheckLayerAvailability", "DescribeImages",
             "GetDownloadUrlForLayer", "LayerDownload", "ListImages", "DescribeRepositories",
             "GetAuthorizationToken"}
    return [e["action"] for e in upstream.requests()
            if e.get("repository") == repository and e["action"] not in reads]


def _refused(status: int, body: bytes) -> None:
    assert status == 405, (status, body[:300])
    (error,) = json.loads(body)["errors"]
    assert error["code"] == "UNSUPPORTED" and "ns" in error["message"]


async def test_ns_never_retargets_a_write(secured: GatewayProcess, upstream: EmulatorProcess,
                                          seeded: str, session: aiohttp.ClientSession) -> None:
    """pusher may push library/nginx; with ?ns=docker.io every write is refused before any
    ECR call, and what the mirror serves stays as it was."""
    before = await _images(upstream, MIRRORED)
    assert [tags for _, tags in before] == [["latest"]]
    client = OciClient(aiohttp.ClientSession(headers=PUSHER), secured.url)
    async with client.session:
        # pusher's own library/nginx (ECR library/nginx): the legitimate push still works.
        layer = b"poisoned layer" * 40
        digest, manifest = await client.push_image("library/nginx", "latest", [layer])
        base = f"{secured.url}/v2/library/nginx"
        upstream.clear_requests()
        q = "ns=docker.io"
        config = json.loads(manifest)["config"]["digest"]
        attempts = [  # the blobs, then the manifest: what poisoned the mirror before
            ("POST", f"{base}/blobs/uploads/?{q}", None, {}),
            ("POST", f"{base}/blobs/uploads/?digest={digest_of(layer)}&{q}", layer, {}),
            ("POST", f"{base}/blobs/uploads/?mount={config}&from=library/nginx&{q}", None, {}),
            ("PUT", f"{base}/manifests/latest?{q}", manifest, {"Content-Type": OCI_MANIFEST}),
            ("DELETE", f"{base}/manifests/{seeded}?{q}", None, {}),
            ("DELETE", f"{base}/blobs/{digest_of(layer)}?{q}", None, {}),
            # An empty ns is no less a mirror namespace for a write.
            ("PUT", f"{base}/manifests/latest?ns=", manifest, {"Content-Type": OCI_MANIFEST}),
        ]
        # An upload started without ns cannot be continued or finished with one.
        location = await client.start("library/nginx")
        sep = "&" if "?" in location else "?"
        attempts += [
            ("PATCH", f"{secured.url}{location}{sep}{q}", layer,
             {"Content-Type": "application/octet-stream"}),
            ("PUT", f"{secured.url}{location}{sep}digest={digest_of(layer)}&{q}", layer, {}),
        ]
        for method, url, data, headers in attempts:
            async with session.request(method, url, data=data,
                                       headers={**PUSHER, **headers}) as r:
                _refused(r.status, await r.read())
                assert r.headers["Allow"] in ("", "GET, HEAD")
    assert _writes(upstream, MIRRORED) == []
    assert await _images(upstream, MIRRORED) == before
    assert before[0][0] == seeded != digest
    # The mirror still serves the genuine image.
    async with session.get(f"{secured.url}/v2/library/nginx/manifests/latest?ns=docker.io",
                           headers={**NODE, "Accept": OCI_MANIFEST}) as r:
        assert r.status == 200 and r.headers["Docker-Content-Digest"] == seeded


async def test_ns_write_refused_without_auth_or_mirrors(gateway: GatewayProcess,
                                                        upstream: EmulatorProcess,
                                                        session: aiohttp.ClientSession) -> None:
    """With no mirrors configured ns is ignored for reads, but a write naming one is still
    refused: it must never matter to where a push lands."""
    name = "plain/app"
    async with session.post(f"{gateway.url}/v2/{name}/blobs/uploads/?ns=docker.io") as r:
        _refused(r.status, await r.read())
    async with session.put(f"{gateway.url}/v2/{name}/manifests/v1?ns=docker.io", data=b"{}",
                           headers={"Content-Type": OCI_MANIFEST}) as r:
        _refused(r.status, await r.read())
    assert _writes(upstream, name) == []


async def test_route_into_a_mirrored_repository_needs_an_ecr_grant(
        secured: GatewayProcess, upstream: EmulatorProcess, seeded: str,
        session: aiohttp.ClientSession) -> None:
    """hub/library/nginx maps onto docker-hub/library/nginx through an ordinary route: a name
    rule on hub/** is not enough to push or delete there; a rule on the ECR repository is."""
    before = await _images(upstream, MIRRORED)
    upstream.clear_requests()
    async with session.post(f"{secured.url}/v2/hub/library/nginx/blobs/uploads/",
                            headers=PUSHER) as r:
        assert r.status == 403, await r.text()
        assert json.loads(await r.read())["errors"][0]["code"] == "DENIED"
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()
    async with session.put(f"{secured.url}/v2/hub/library/nginx/manifests/latest",
                           data=manifest, headers={**PUSHER, "Content-Type": OCI_MANIFEST}) as r:
        assert r.status == 403, await r.text()
    # A token is no way round it: the token server hands out pull only.
    async with session.get(f"{secured.url}/token", headers=PUSHER, params={
            "service": "ecr-gateway", "scope": "repository:hub/library/nginx:pull,push"}) as r:
        assert r.status == 200
        token = (await r.json())["token"]
    async with session.post(f"{secured.url}/v2/hub/library/nginx/blobs/uploads/",
                            headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 403, await r.text()
    assert _writes(upstream, MIRRORED) == []
    assert await _images(upstream, MIRRORED) == before
    # pusher still reads it through the route.
    async with session.get(f"{secured.url}/v2/hub/library/nginx/manifests/latest",
                           headers={**PUSHER, "Accept": OCI_MANIFEST}) as r:
        assert r.status == 200 and r.headers["Docker-Content-Digest"] == seeded
    # seeder holds docker-hub/** on the ECR repository: the push goes through.
    async with aiohttp.ClientSession(headers=SEEDER) as seeder:
        digest, _ = await OciClient(seeder, secured.url).push_image(
            "hub/library/nginx", "seeded-2", [b"a second genuine layer" * 30])
    assert (digest, ["seeded-2"]) in await _images(upstream, MIRRORED)


async def test_mirror_without_anonymous_pull_asks_for_credentials(
        secured: GatewayProcess, seeded: str, session: aiohttp.ClientSession) -> None:
    """Mirrors are closed by default: anonymous callers get 401 with a challenge; a node's
    credential (what hosts.toml sends in its Authorization header) reads."""
    url = f"{secured.url}/v2/library/nginx/manifests/latest?ns=docker.io"
    for method in ("GET", "HEAD"):
        async with session.request(method, url, headers={"Accept": OCI_MANIFEST}) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith("Bearer ")
    async with session.get(f"{secured.url}/v2/library/nginx/tags/list?ns=docker.io") as r:
        assert r.status == 401
    async with session.get(url, headers={**NODE, "Accept": OCI_MANIFEST}) as r:
        assert r.status == 200 and r.headers["Docker-Content-Digest"] == seeded


def test_serve_refuses_an_empty_htpasswd_on_a_public_address(tmp_path: Path) -> None:
    """An htpasswd file listing nobody is no authentication: the real command refuses to
    listen on 0.0.0.0 with it (and with a mirror open to anonymous pulls)."""
    import subprocess
    import sys

    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("")
    for extra in ({}, {"ECR_GATEWAY_MIRRORS": "{docker.io: {anonymous_pull: true}}"}):
        env = {"PATH": "/usr/bin:/bin", "ECR_GATEWAY_AUTH__MODE": "htpasswd",
               "ECR_GATEWAY_AUTH__HTPASSWD_FILE": str(htpasswd), **extra}
        if extra:
            write_htpasswd(htpasswd, {"node": "node-pw"})
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "serve", "--listen", "0.0.0.0:0",
             "--data-dir", str(tmp_path / "data")], capture_output=True, text=True,
            timeout=60, env=env)
        assert result.returncode == 2, result.stderr
        assert "refusing to start" in result.stderr
        assert ("htpasswd_file" if not extra else "anonymous_pull") in result.stderr
        assert "listening" not in result.stdout


async def test_requests_are_judged_where_they_resolve_not_where_a_token_was_granted(
        upstream: EmulatorProcess, gateway: GatewayProcess, tmp_path: Path,
        session: aiohttp.ClientSession) -> None:
    """The attacker: no credentials, against a gateway whose default route is open to
    anonymous pulls and whose docker.io mirror is not. The token endpoint grants an anonymous
    pull of library/<x> (as the open route allows); the same token with ?ns=docker.io must
    not read the mirror's private image. And dave, whose pull is taken away on team-a/**,
    does not see it in the catalog by adding ?ns=docker.io."""
    suffix = uuid.uuid4().hex[:8]
    private, team = f"library/private-{suffix}", f"team-a/app-{suffix}"
    async with aiohttp.ClientSession() as seeding:  # through the open gateway, as ECR fills
        seeder = OciClient(seeding, gateway.url)
        digest, _ = await seeder.push_image(f"docker-hub/{private}", "v1",
                                            [b"mirrored, private layer" * 40])
        await seeder.push_image(team, "v1", [b"team a layer" * 40])
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"dave": "dave-pw"})
    config = {
        "auth": {"mode": "htpasswd", "htpasswd_file": str(htpasswd), "rules": [
            {"repository": "**", "users": ["dave"], "actions": ["pull", "catalog"]},
            {"ecr_repository": "team-a/**", "users": ["dave"], "actions": ["push"]}]},
        "mirrors": {"docker.io": {"repository_prefix": "docker-hub"}},
        "routes": [{"prefix": "", "anonymous_pull": True}],
    }
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
        token = await token_for(session, gw.url, [f"repository:{private}:pull"])
        bearer = {"Authorization": f"Bearer {token}", "Accept": OCI_MANIFEST}
        mirrored = f"{gw.url}/v2/{private}/manifests/v1?ns=docker.io"
        async with session.get(mirrored) as r:
            assert r.status == 401
        async with session.get(mirrored, headers=bearer) as r:
            assert r.status == 401, await r.text()
            assert r.headers["WWW-Authenticate"].startswith("Bearer ")
        async with session.get(f"{gw.url}/v2/{private}/blobs/{digest}?ns=docker.io",
                               headers=bearer) as r:
            assert r.status == 401
        # The node's own credential still reads the mirror.
        dave = basic("dave", "dave-pw")
        async with session.get(mirrored, headers={**dave, "Accept": OCI_MANIFEST}) as r:
            assert r.status == 200 and r.headers["Docker-Content-Digest"] == digest
        for query in ("", "?ns=docker.io"):
            async with session.get(f"{gw.url}/v2/_catalog{query}", headers=dave) as r:
                assert r.status == 200
                listed = (await r.json())["repositories"]
            assert team not in listed, query
            assert f"docker-hub/{private}" in listed, query
        async with session.get(f"{gw.url}/v2/{team}/tags/list", headers=dave) as r:
            assert r.status == 403


async def test_an_anonymous_rule_does_not_open_a_closed_mirror(
        upstream: EmulatorProcess, gateway: GatewayProcess, tmp_path: Path,
        session: aiohttp.ClientSession) -> None:
    """The attacker: no credentials. A rule lets anyone pull public/** (the organisation's
    own public images); the docker.io mirror is closed to anonymous pulls. Adding
    ?ns=docker.io to a public/<x> name must not read the mirror (nor start a fill spending
    the gateway's upstream identity): before, the rule decided for the mirror too."""
    suffix = uuid.uuid4().hex[:8]
    name = f"public/app-{suffix}"
    async with aiohttp.ClientSession() as seeding:  # through the open gateway, as ECR fills
        seeder = OciClient(seeding, gateway.url)
        mirrored_digest, _ = await seeder.push_image(f"docker-hub/{name}", "v1",
                                                     [b"mirrored layer" * 40])
        own_digest, _ = await seeder.push_image(name, "v1", [b"own public layer" * 40])
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"node": "node-pw"})
    config = {
        "auth": {"mode": "htpasswd", "htpasswd_file": str(htpasswd), "rules": [
            {"repository": "public/**", "anonymous": True, "actions": ["pull"]},
            {"repository": "**", "users": ["node"], "actions": ["pull"]}]},
        "mirrors": {"docker.io": {"repository_prefix": "docker-hub"}},
    }
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
        accept = {"Accept": OCI_MANIFEST}
        async with session.get(f"{gw.url}/v2/{name}/manifests/v1", headers=accept) as r:
            assert r.status == 200 and r.headers["Docker-Content-Digest"] == own_digest
        mirrored = f"{gw.url}/v2/{name}/manifests/v1?ns=docker.io"
        async with session.get(mirrored, headers=accept) as r:
            assert r.status == 401, await r.text()
        token = await token_for(session, gw.url, [f"repository:{name}:pull"])
        async with session.get(mirrored, headers={**accept,
                                                  "Authorization": f"Bearer {token}"}) as r:
            assert r.status == 401, await r.text()
        node = basic("node", "node-pw")
        async with session.get(mirrored, headers={**accept, **node}) as r:
            assert r.status == 200 and r.headers["Docker-Content-Digest"] == mirrored_digest


def _gateway_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECR_GATEWAY_")}
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=timeout, check=False,
                          env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})


@pytest.mark.parametrize(("mirror", "named"), [
    # No prefix: ?ns=evil.io with team/app would fill ECR's team/app with evil.io's image.
    ({}, "needs its own repository_prefix"),
    # The prefix of a route's repositories: the same, for every name the route serves.
    ({"repository_prefix": "team"}, "routes[0]"),
])
def test_a_pull_through_mirror_sharing_repositories_is_never_served(
        upstream: EmulatorProcess, tmp_path: Path, mirror: dict[str, Any], named: str) -> None:
    """A mirror with an upstream fills ECR with the gateway's identity on any pull: an
    attacker who may only pull would otherwise replace team/app:latest, which the
    organisation pushes through its routes, by naming the mirror (?ns=evil.io). Neither
    check-config nor serve takes such a configuration; nothing is written."""
    evil = {"url": "http://127.0.0.1:9"}  # never asked: the gateway does not start
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({
        "upstream": {"mode": "aws", "endpoint_url": upstream.url},
        "mirrors": {"evil.io": {**mirror, "upstream": evil}, "docker.io": {}},
        "routes": [{"prefix": "team", "repository_prefix": "team"}, {"prefix": ""}]}))
    before = len(upstream.requests())
    checked = _gateway_cli("check-config", str(config))
    assert checked.returncode == 2, checked.stdout
    assert "mirrors.evil.io.repository_prefix" in checked.stderr and named in checked.stderr
    served = _gateway_cli("serve", "--config", str(config), "--listen", "127.0.0.1:0",
                          "--data-dir", str(tmp_path / "data"), timeout=30)
    assert served.returncode == 2, served.stderr
    assert "mirrors.evil.io.repository_prefix" in served.stderr and named in served.stderr
    assert "Traceback" not in served.stderr
    assert len(upstream.requests()) == before  # no ECR call, let alone a write
