"""Routing by upstream host: containerd's ``?ns=<host>`` picks the ECR target."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import ConfigError, load_config
from gateway.ecr.routing import Router
from tests.integration.mirror.conftest import StartGateway
from tests.integration.mirror.helpers import (
    MANIFEST_ACCEPT,
    access_log_until,
    check_pulled,
    ecr_calls,
    pull,
    push_image,
)
from tests.support.emulator import EmulatorProcess, ecr_client, replication_statuses
from tests.support.gateway import GatewayProcess

ECR_HOST_EU = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
OTHER_ACCOUNT = "999999999999.dkr.ecr.us-east-1.amazonaws.com"

MIRRORS = {
    "docker.io": {"repository_prefix": "docker-hub"},
    "registry.example.com": {"repository_prefix": "example"},
    ECR_HOST_EU: {},
    OTHER_ACCOUNT: {},
    "public.ecr.aws": {},
}


@pytest.fixture(scope="module")
def mirror(start_gateway: StartGateway) -> GatewayProcess:
    return start_gateway({"mirrors": MIRRORS})


def _uid() -> str:
    return uuid.uuid4().hex[:10]


async def test_docker_io_maps_onto_the_pull_through_prefix(
        gateway: GatewayProcess, mirror: GatewayProcess, upstream: EmulatorProcess) -> None:
    """docker.io/library/<x> (ns=docker.io) is served from ECR's docker-hub/library/<x>; the
    same name without ns takes the default route, where no such repository exists."""
    app = f"app-{_uid()}"
    image = await push_image(gateway.url, f"docker-hub/library/{app}")
    upstream.clear_requests()
    async with aiohttp.ClientSession() as session:
        check_pulled(await pull(session, mirror.url, f"library/{app}", "v1", "docker.io"),
                     image)
        async with session.head(f"{mirror.url}/v2/library/{app}/manifests/v1") as r:
            assert r.status == 404
    repos = {e["repository"] for e in upstream.requests() if e["action"] == "BatchGetImage"}
    assert repos == {f"docker-hub/library/{app}", f"library/{app}"}, repos
    def mine(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in entries if e["repository"] == f"library/{app}"]

    honoured = mine(access_log_until(mirror, lambda es: len(mine(es)) >= 7))
    assert {e["ns"] for e in honoured} == {"docker.io", None}


async def test_ecr_host_gives_registry_id_and_region(
        gateway: GatewayProcess, mirror: GatewayProcess, upstream: EmulatorProcess) -> None:
    """An ECR registry host routes to that account and region: calls are signed for
    eu-west-1 and name registry 123456789012; another account's host reaches that account,
    whose repositories this account's key may not read without a policy there (AccessDenied
    from upstream, DENIED to the client). The emulator keeps a
    registry per region: replication puts the image pushed to us-east-1 into eu-west-1."""
    name = f"team/{_uid()}"
    async with ecr_client(upstream.url) as ecr:
        await ecr.put_replication_configuration(replicationConfiguration={"rules": [{
            "destinations": [{"region": "eu-west-1", "registryId": "123456789012"}],
            "repositoryFilters": [{"filter": name, "filterType": "PREFIX_MATCH"}]}]})
        try:
            image = await push_image(gateway.url, name)
            assert (await replication_statuses(ecr, name, {"imageTag": "v1"}))[0][
                "status"] == "COMPLETE"
        finally:
            await ecr.put_replication_configuration(replicationConfiguration={"rules": []})
    upstream.clear_requests()
    async with aiohttp.ClientSession() as session:
        check_pulled(await pull(session, mirror.url, name, "v1", ECR_HOST_EU), image)
        async with session.head(f"{mirror.url}/v2/{name}/manifests/v1?ns={OTHER_ACCOUNT}") as r:
            assert r.status == 403
    entries = [e for e in upstream.requests() if e["action"] != "LayerDownload"]
    eu = [e for e in entries if e["region"] == "eu-west-1"]
    assert eu and all(e["outcome"] == "ok" for e in eu), entries
    other = [e for e in entries if e["region"] == "us-east-1"]
    assert [e["outcome"] for e in other] == ["AccessDeniedException"], other


@pytest.mark.parametrize("ns,message", [
    ("quay.io", "not a mirror of quay.io"),
])
async def test_unmapped_host_is_name_unknown_without_upstream_call(
        mirror: GatewayProcess, upstream: EmulatorProcess, ns: str, message: str) -> None:
    """containerd moves on to its next host on a 404: an unmapped (or not yet supported)
    upstream host answers NAME_UNKNOWN at once, with no ECR call."""
    upstream.clear_requests()
    async with aiohttp.ClientSession() as session:
        for method, path in (("HEAD", "manifests/v1"), ("GET", "manifests/v1"),
                             ("GET", "blobs/sha256:" + "a" * 64)):
            started = time.monotonic()
            async with session.request(method, f"{mirror.url}/v2/library/busybox/{path}",
                                       params={"ns": ns},
                                       headers={"Accept": MANIFEST_ACCEPT}) as r:
                assert r.status == 404
                if method == "GET":
                    error = (await r.json())["errors"][0]
                    assert error["code"] == "NAME_UNKNOWN"
                    assert message in error["message"]
                    assert error["detail"]["ns"] == ns
            assert time.monotonic() - started < 0.5
    assert ecr_calls(upstream) == {}
    def mine(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in entries if e["ns"] == ns]

    logged = mine(access_log_until(mirror, lambda es: len(mine(es)) >= 3))
    assert len(logged) == 3 and all(e["upstream_calls"] == 0 for e in logged), logged


async def test_without_mirrors_ns_is_ignored(gateway: GatewayProcess, repo: str) -> None:
    """A gateway with no mirrors configured serves every request through its routes,
    whatever ns says (a plain registry that containerd happens to use as a mirror)."""
    image = await push_image(gateway.url, repo)
    async with aiohttp.ClientSession() as session:
        check_pulled(await pull(session, gateway.url, repo, "v1", "registry.example.com"),
                     image)


def test_mirror_config_and_anonymous_pull_flag(tmp_path: Path) -> None:
    """The routing table built from a config: targets, pull-only mirror routes, and the
    anonymous-pull flag the auth layer reads."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "mirrors:\n"
        "  docker.io: {repository_prefix: docker-hub, anonymous_pull: true}\n"
        "  ghcr.io: {repository_prefix: ghcr}\n"
        f"  {ECR_HOST_EU}:\n"
        "  public.ecr.aws: {}\n"
        "routes:\n  - {prefix: '', repository_prefix: local}\n")
    router = Router.from_config(load_config(str(path), environ={}))
    hub = router.resolve("library/nginx", "docker.io")
    assert hub is not None and hub.key == (None, "us-east-1", "docker-hub/library/nginx")
    assert hub.route.create_on_push is False
    ecr = router.resolve("team/app", ECR_HOST_EU)
    assert ecr is not None and ecr.key == ("123456789012", "eu-west-1", "team/app")
    default = router.resolve("library/nginx")
    assert default is not None and default.repository == "local/library/nginx"
    public = router.resolve("emulator/x", "public.ecr.aws")  # ECR Public (tests/.../public)
    assert public is not None and public.route.upstream_kind == "ecr-public"
    # Others' registries (names carry the alias): not the account's own repository
    # "emulator/x", which an ECR Public route would name by the same text.
    assert public.key == ("ecr-public:/", "us-east-1", "emulator/x")
    assert router.resolve("x", "quay.io") is None
    assert router.anonymous_pull("library/nginx", "docker.io")
    assert not router.anonymous_pull("o/app", "ghcr.io")  # mirrors default to credentials
    assert not router.anonymous_pull("library/nginx")  # routes default to credentials


@pytest.mark.parametrize("text,key", [
    ("mirrors:\n  Docker.IO: {}\n", "mirrors.Docker.IO"),
    ("mirrors:\n  docker.io: {repository_prefix: hub/}\n", "mirrors.docker.io.repository_prefix"),
    ("mirrors:\n  docker.io: {colour: blue}\n", "mirrors.docker.io.colour"),
    ("mirrors: [docker.io]\n", "mirrors"),
    ("cache:\n  tag_ttl_seconds: -1\n", "cache.tag_ttl_seconds"),
    ("blobs:\n  cache:\n    max_bytes: lots\n", "blobs.cache.max_bytes"),
])
def test_bad_mirror_config_is_refused(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ={})
    assert caught.value.key == key


def test_which_ecr_repositories_mirrors_serve() -> None:
    """What the auth layer protects: ECR repositories under a mirror's prefix, in its
    registry and region, whichever route or mirror a name came through."""
    config = load_config(None, environ={}, overrides={
        "mirrors": {"docker.io": {"repository_prefix": "docker-hub"},
                    ECR_HOST_EU: {"repository_prefix": "cache"}},
        "routes": [{"prefix": ""}, {"prefix": "hub", "repository_prefix": "docker-hub"},
                   {"prefix": "eu", "region": "eu-west-1"},
                   {"prefix": "other", "registry_id": "210987654321", "region": "eu-west-1"}]})
    router = Router.from_config(config)

    def mirrored(name: str, ns: str | None = None) -> bool:
        target = router.resolve(name, ns)
        assert target is not None
        return router.mirrored(target)

    assert mirrored("library/nginx", "docker.io")
    assert mirrored("hub/library/nginx")  # an ordinary route onto docker-hub/...
    assert mirrored("docker-hub")  # the prefix itself
    assert not mirrored("docker-hubx/app")  # a prefix is whole path segments
    assert not mirrored("library/nginx")  # library/nginx: no mirror's
    assert mirrored("eu/cache/app")  # the ECR host mirror's account may be the caller's own
    assert not mirrored("eu/app")
    assert not mirrored("other/cache/app")  # another account than the mirror's
    assert not mirrored("cache/app")  # us-east-1: not the mirror's region
