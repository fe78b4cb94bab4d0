"""The attacker may pull ``hub/**`` only, a route that pulls through an upstream registry
(one where anyone can publish, as on Docker Hub); carol's team pushes ``team-b/app:latest``
through another route. A pull-through fill writes with the gateway's own identity, so a
route with an upstream must fill ECR repositories of its own: were its repository_prefix
``""`` (or one holding another route's repositories), a pull of ``hub/team-b/app:latest``
would store the upstream's ``team-b/app:latest`` over carol's, which the attacker may not
even read. Neither check-config nor serve takes such a configuration; one whose
repositories are its own (the README's ``hub`` onto ``docker-hub``) fills only those."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.integration.auth.helpers import basic, request, write_htpasswd
from tests.integration.trust.conftest import refused_start
from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.hostile import Server
from tests.support.oci import OCI_MANIFEST, OciClient, image_manifest

RULES = [{"repository": "team-b/**", "users": ["carol"], "actions": ["pull", "push", "delete"]},
         {"repository": "hub/**", "users": ["mallory"], "actions": ["pull"]}]
CAROL, MALLORY = basic("carol", "carol-pw"), basic("mallory", "mallory-pw")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Published:
    """What the attacker published upstream: one image, served under every name and tag."""

    def __init__(self) -> None:
        self.config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        self.layer = b"the attacker's layer " + os.urandom(1000)
        self.manifest = image_manifest(self.config, [self.layer])
        self.digest = _digest(self.manifest)
        self.blobs = {_digest(b): b for b in (self.config, self.layer)}

    async def serve(self, request: web.Request) -> web.StreamResponse:
        last = request.path.rsplit("/", 1)[-1]
        if "/manifests/" in request.path:
            return web.Response(body=self.manifest, content_type=OCI_MANIFEST,
                                headers={"Docker-Content-Digest": self.digest})
        if last in self.blobs:
            return web.Response(body=self.blobs[last], content_type="application/octet-stream")
        return web.json_response({"errors": [{"code": "NOT_FOUND"}]}, status=404)


def _config(tmp_path: Path, hub: str, routes: list[dict[str, Any]]) -> dict[str, Any]:
    users = write_htpasswd(tmp_path / "htpasswd", {"carol": "carol-pw",
                                                  "mallory": "mallory-pw"})
    for route in routes:
        if route.get("upstream") == "HUB":
            route["upstream"] = {"url": hub}
    return {"auth": {"mode": "htpasswd", "htpasswd_file": str(users), "rules": RULES},
            "routes": routes}


async def _tagged(upstream: EmulatorProcess, repository: str) -> str | None:
    async with ecr_client(upstream.url) as ecr:
        try:
            found = await ecr.batch_get_image(repositoryName=repository,
                                              imageIds=[{"imageTag": "latest"}])
        except ecr.exceptions.RepositoryNotFoundException:
            return None
    images = found["images"]
    return str(images[0]["imageId"]["imageDigest"]) if images else None


async def _attack(gw: GatewayProcess, session: aiohttp.ClientSession, app: str) -> None:
    """Mallory, who may not read team-b/, pulls its name through the hub route."""
    own = await request(session, "GET", f"{gw.url}/v2/team-b/{app}/manifests/latest",
                        {**MALLORY, "Accept": OCI_MANIFEST})
    assert own.status == 403, own.body[:300]
    pulled = await request(session, "GET", f"{gw.url}/v2/hub/team-b/{app}/manifests/latest",
                           {**MALLORY, "Accept": OCI_MANIFEST})
    assert pulled.status == 200, pulled.body[:300]


async def _settled(upstream: EmulatorProcess, repository: str, before: str | None) -> str | None:
    """What ECR's tag names once the fill had time to store it (a few seconds)."""
    now = before
    for _ in range(50):
        now = await _tagged(upstream, repository)
        if now != before:
            return now
        await asyncio.sleep(0.1)
    return now


@pytest.mark.parametrize("routes", [
    # hub/team-b/app → team-b/app: the catch-all's (added when no route has prefix "")
    [{"prefix": "hub", "repository_prefix": "", "upstream": "HUB"}],
    # hub/team-b/app → cache/team-b/app, the team-b route's team-b/app
    [{"prefix": "hub", "repository_prefix": "cache", "upstream": "HUB"},
     {"prefix": "team-b", "repository_prefix": "cache/team-b"}],
], ids=["empty-prefix", "nested-prefix"])
async def test_a_pull_through_route_never_fills_another_routes_repositories(
        upstream: EmulatorProcess, tmp_path: Path, session: aiohttp.ClientSession,
        routes: list[dict[str, Any]]) -> None:
    published = Published()
    app = uuid.uuid4().hex[:10]
    victim = _victim(routes, app)
    async with Server(published.serve) as hub:
        gateway = GatewayProcess(tmp_path / "gw", _config(tmp_path, hub.url, routes),
                                 upstream_url=upstream.url)
        if refused_start(gateway, "routes[0].repository_prefix",
                         "must be its alone"):
            assert await _tagged(upstream, victim) is None  # nothing was written
            assert hub.seen == []
            return
        try:
            async with aiohttp.ClientSession(headers=CAROL) as carol:
                own, _ = await OciClient(carol, gateway.url).push_image(
                    f"team-b/{app}", "latest", [os.urandom(800)])
            await _attack(gateway, session, app)
            now = await _settled(upstream, victim, own)
        finally:
            gateway.stop()
    pytest.fail(f"a gateway whose route hub fills {victim} started; a pull of "
                f"hub/team-b/{app}:latest by a user who may not read team-b/ made its tag "
                f"{now} (the upstream's {published.digest}; carol pushed {own})")


def _victim(routes: list[dict[str, Any]], app: str) -> str:
    """The ECR repository carol's team-b/<app> is."""
    team = [r for r in routes if r["prefix"] == "team-b"]
    return f"{team[0]['repository_prefix']}/{app}" if team else f"team-b/{app}"


def test_check_config_names_the_route(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"routes": [
        {"prefix": "hub", "repository_prefix": "", "upstream": {"url": "https://hub.example"}},
        {"prefix": "", "repository_prefix": ""}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECR_GATEWAY_")}
    checked = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    assert checked.returncode == 2, checked.stdout
    assert "routes[0].repository_prefix" in checked.stderr
    assert "routes[1] (prefix '')" in checked.stderr and "Traceback" not in checked.stderr


async def test_a_route_filling_its_own_repositories_leaves_the_others_alone(
        upstream: EmulatorProcess, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    """The README's shape (hub onto docker-hub, the catch-all onto ""): the same pull fills
    docker-hub/team-b/<app>, and carol's team-b/<app>:latest stays hers."""
    published = Published()
    app = uuid.uuid4().hex[:10]
    async with Server(published.serve) as hub:
        config = _config(tmp_path, hub.url, [
            {"prefix": "hub", "repository_prefix": "docker-hub", "upstream": "HUB"},
            {"prefix": ""}])
        with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gateway:
            async with aiohttp.ClientSession(headers=CAROL) as carol:
                own, _ = await OciClient(carol, gateway.url).push_image(
                    f"team-b/{app}", "latest", [os.urandom(800)])
            await _attack(gateway, session, app)
            filled = await _settled(upstream, f"docker-hub/team-b/{app}", None)
            assert filled == published.digest
            assert await _tagged(upstream, f"team-b/{app}") == own
