"""Images through the gateway: routing, create-on-push, mounts, untag, restarts, tokens."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import aiohttp

from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, digest_of


async def test_route_prefix_maps_names_both_ways(upstream: EmulatorProcess,
                                                 tmp_path: Path) -> None:
    config = {"routes": [{"prefix": "team", "repository_prefix": "teams/blue"},
                         {"prefix": "", "create_on_push": False}]}
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
        async with aiohttp.ClientSession() as session:
            client = OciClient(session, gw.url)
            await client.push_image("team/app", "v1", [os.urandom(100)])
            async with ecr_client(upstream.url) as ecr:
                found = await ecr.describe_repositories(repositoryNames=["teams/blue/app"])
                assert found["repositories"][0]["repositoryName"] == "teams/blue/app"
            async with session.get(f"{gw.url}/v2/_catalog") as r:
                assert "team/app" in (await r.json())["repositories"]
            # The catch-all route does not create repositories.
            async with session.post(f"{gw.url}/v2/other/app/blobs/uploads/") as r:
                assert r.status == 404
                assert (await r.json())["errors"][0]["code"] == "NAME_UNKNOWN"


async def test_mount_copies_between_repositories(gateway: GatewayProcess, repo: str) -> None:
    async with aiohttp.ClientSession() as session:
        client = OciClient(session, gateway.url)
        layer = os.urandom(300_000)
        await client.push_image(repo, "v1", [layer])
        target = repo + "-copy"
        digest = digest_of(layer)
        url = f"{gateway.url}/v2/{target}/blobs/uploads/?mount={digest}&from={repo}"
        async with session.post(url) as r:
            assert r.status == 201 and r.headers["Docker-Content-Digest"] == digest
        assert await client.get_blob(target, digest) == layer
        missing = digest_of(b"nowhere")
        async with session.post(f"{gateway.url}/v2/{target}/blobs/uploads/"
                                f"?mount={missing}&from={repo}") as r:
            assert r.status == 202  # not mountable: an ordinary upload session instead


async def test_untag_keeps_the_image(gateway: GatewayProcess, repo: str) -> None:
    async with aiohttp.ClientSession() as session:
        client = OciClient(session, gateway.url)
        digest, _ = await client.push_image(repo, "only", [os.urandom(50)])
        async with session.delete(f"{gateway.url}/v2/{repo}/manifests/only") as r:
            assert r.status == 202
        async with session.get(f"{gateway.url}/v2/{repo}/manifests/only") as r:
            assert r.status == 404
        async with session.get(f"{gateway.url}/v2/{repo}/manifests/{digest}") as r:
            assert r.status == 200
        async with session.get(f"{gateway.url}/v2/{repo}/tags/list") as r:
            assert (await r.json())["tags"] == []


async def test_restart_keeps_every_image(tmp_path: Path) -> None:
    emulator = EmulatorProcess(tmp_path / "emu")
    emulator.start()
    try:
        with GatewayProcess(tmp_path / "gw", upstream_url=emulator.url) as gw:
            async with aiohttp.ClientSession() as session:
                client = OciClient(session, gw.url)
                layers = [os.urandom(12 * 1024 * 1024), os.urandom(10)]
                _digest, manifest = await client.push_image("keep/me", "v1", layers)
                emulator.restart()
                gw.restart()
                async with session.get(f"{gw.url}/v2/keep/me/manifests/v1") as r:
                    assert r.status == 200 and await r.read() == manifest
                for layer in layers:
                    assert await client.get_blob("keep/me", digest_of(layer)) == layer
    finally:
        emulator.stop()


async def test_token_cache_single_call_under_load(upstream: EmulatorProcess,
                                                  tmp_path: Path) -> None:
    with GatewayProcess(tmp_path / "gw", upstream_url=upstream.url) as gw:
        async with aiohttp.ClientSession() as session:
            upstream.clear_requests()

            async def ready() -> int:
                async with session.get(f"{gw.url}/readyz") as r:
                    return r.status

            statuses = await asyncio.gather(*(ready() for _ in range(500)))
            assert set(statuses) == {200}
            actions = [e["action"] for e in upstream.requests()]
            assert actions.count("GetAuthorizationToken") == 1


async def test_accept_header_decides_the_accepted_media_types(gateway: GatewayProcess,
                                                              upstream: EmulatorProcess,
                                                              repo: str) -> None:
    """BatchGetImage gets the client's Accept as acceptedMediaTypes. A manifest stored in a
    type the client does not accept is converted by ECR when read by tag (OCI to Docker
    schema 2, served with its own digest), and not served when read by digest."""
    docker_v2 = "application/vnd.docker.distribution.manifest.v2+json"
    oci = "application/vnd.oci.image.manifest.v1+json"
    async with aiohttp.ClientSession() as session:
        client = OciClient(session, gateway.url)
        digest, manifest = await client.push_image(repo, "v1", [os.urandom(64)])
        for reference in ("v1", digest):
            url = f"{gateway.url}/v2/{repo}/manifests/{reference}"
            for accept, status in ((oci, 200), (f"{docker_v2}, {oci}", 200), ("*/*", 200),
                                   (None, 200)):
                headers = {"Accept": accept} if accept else {}
                async with session.get(url, headers=headers) as r:
                    assert r.status == status, (reference, accept, r.status)
                    assert await r.read() == manifest
                    assert r.headers["Content-Type"] == oci
        async with session.get(f"{gateway.url}/v2/{repo}/manifests/v1",
                               headers={"Accept": docker_v2}) as r:
            assert r.status == 200
            converted = await r.read()
            assert r.headers["Content-Type"] == docker_v2
            assert r.headers["Docker-Content-Digest"] == digest_of(converted)
            assert json.loads(converted)["layers"][0]["digest"] == \
                json.loads(manifest)["layers"][0]["digest"]
        async with session.get(f"{gateway.url}/v2/{repo}/manifests/{digest}",
                               headers={"Accept": docker_v2}) as r:
            assert r.status == 404
            assert (await r.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        # The narrowed request reached ECR with the client's type, and ECR refused it.
        calls = [e for e in upstream.requests("BatchGetImage")
                    if e.get("repository") == repo]
        assert calls, "the narrowed Accept must be asked upstream"


async def test_tag_reads_with_an_accept_list_are_cached(upstream: EmulatorProcess, repo: str,
                                                        tmp_path: Path) -> None:
    """docker and containerd always send an Accept list: once the tag's entry from the push
    has expired, their repeated tag reads are answered from the tag cache again (one
    BatchGetImage per Accept set), and a push of the tag replaces every set's entry."""
    docker_accept = ", ".join((
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json"))
    oci_only = "application/vnd.oci.image.manifest.v1+json"

    def fetches() -> int:
        return len([e for e in upstream.requests("BatchGetImage")
                    if e.get("repository") == repo])

    ttl = 3.0
    with GatewayProcess(tmp_path / "gw", {"cache": {"tag_ttl_seconds": ttl}},
                        upstream_url=upstream.url) as gateway:
        async with aiohttp.ClientSession() as session:
            client = OciClient(session, gateway.url)
            await client.push_image(repo, "v1", [os.urandom(64)])
            url = f"{gateway.url}/v2/{repo}/manifests/v1"
            await asyncio.sleep(ttl + 0.2)  # what the push cached has expired
            before = fetches()
            for accept in (docker_accept, oci_only):
                for _ in range(20):
                    async with session.head(url, headers={"Accept": accept}) as r:
                        assert r.status == 200
            assert fetches() - before == 2  # one per Accept set
            new_digest, new_manifest = await client.push_image(repo, "v1", [os.urandom(64)])
            for accept in (docker_accept, oci_only):
                async with session.get(url, headers={"Accept": accept}) as r:
                    assert r.status == 200 and await r.read() == new_manifest
                    assert r.headers["Docker-Content-Digest"] == new_digest
