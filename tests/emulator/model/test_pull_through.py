"""Pull through cache from a real upstream registry (CNCF distribution on loopback)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from botocore.exceptions import ClientError

from tests.emulator.model.conftest import PASSWORD, USER, Registry
from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.hostile import Forwarder, Server
from tests.support.oci import OciClient, digest_of

SECRET_ARN = ("arn:aws:secretsmanager:us-east-1:123456789012:secret:"
              "ecr-pullthroughcache/upstream-AbCdEf")
ROLE = "arn:aws:iam::123456789012:role/ecr-pull-through"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
LIFECYCLE = json.dumps({"rules": [{"rulePriority": 1, "description": "keep ten",
                                   "selection": {"tagStatus": "any", "countType":
                                                 "imageCountMoreThan", "countNumber": 10},
                                   "action": {"type": "expire"}}]})


def prefix() -> str:
    return f"ptc{uuid.uuid4().hex[:8]}"


def dead_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def push_upstream(registry: Registry, name: str, tag: str,
                        auth: str | None = None) -> tuple[str, bytes, list[bytes]]:
    layers = [os.urandom(3000), os.urandom(70000)]
    headers = {"Authorization": auth} if auth else {}
    async with aiohttp.ClientSession(headers=headers) as session:
        digest, manifest = await OciClient(session, registry.url).push_image(name, tag, layers)
    return digest, manifest, layers


def write_secret(emulator: EmulatorProcess, value: Any) -> None:
    (emulator.data_dir / "pull-through-secrets.json").write_text(
        json.dumps({"ecr-pullthroughcache/upstream-AbCdEf": value}))


async def test_rule_lifecycle(ecr: Any, upstream: Registry) -> None:
    name = prefix()
    created = await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=name,
                                                       upstreamRegistryUrl=upstream.url)
    assert created["ecrRepositoryPrefix"] == name
    assert created["upstreamRegistryUrl"] == upstream.url
    assert created["upstreamRepositoryPrefix"] == "ROOT"
    assert created["registryId"] == "123456789012"
    with pytest.raises(ecr.exceptions.PullThroughCacheRuleAlreadyExistsException):
        await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=name,
                                                 upstreamRegistryUrl=upstream.url)
    described = await ecr.describe_pull_through_cache_rules(ecrRepositoryPrefixes=[name])
    assert [r["ecrRepositoryPrefix"] for r in described["pullThroughCacheRules"]] == [name]
    valid = await ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix=name)
    assert valid["isValid"] is True and "failure" not in valid
    updated = await ecr.update_pull_through_cache_rule(ecrRepositoryPrefix=name,
                                                       customRoleArn=ROLE)
    assert updated["customRoleArn"] == ROLE
    deleted = await ecr.delete_pull_through_cache_rule(ecrRepositoryPrefix=name)
    assert deleted["upstreamRegistryUrl"] == upstream.url
    for call in (ecr.delete_pull_through_cache_rule, ecr.validate_pull_through_cache_rule):
        with pytest.raises(ecr.exceptions.PullThroughCacheRuleNotFoundException):
            await call(ecrRepositoryPrefix=name)
    with pytest.raises(ecr.exceptions.PullThroughCacheRuleNotFoundException):
        await ecr.describe_pull_through_cache_rules(ecrRepositoryPrefixes=[name])


async def test_rule_input_is_validated(ecr: Any, upstream: Registry) -> None:
    with pytest.raises(ecr.exceptions.InvalidParameterException):  # the model's prefix pattern
        await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="Bad_Prefix!",
                                                 upstreamRegistryUrl=upstream.url)
    with pytest.raises(ecr.exceptions.UnsupportedUpstreamRegistryException):
        await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=prefix(),
                                                 upstreamRegistryUrl="ftp://example.invalid")
    with pytest.raises(ecr.exceptions.InvalidParameterException):  # Docker Hub needs one
        await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=prefix(),
                                                 upstreamRegistryUrl="registry-1.docker.io")
    with pytest.raises(ecr.exceptions.SecretNotFoundException):
        await ecr.create_pull_through_cache_rule(
            ecrRepositoryPrefix=prefix(), upstreamRegistryUrl=upstream.url,
            credentialArn=SECRET_ARN.replace("upstream-AbCdEf", "absent"))
    with pytest.raises(ecr.exceptions.InvalidParameterException):  # the model's ARN pattern
        await ecr.create_pull_through_cache_rule(
            ecrRepositoryPrefix=prefix(), upstreamRegistryUrl=upstream.url,
            credentialArn="arn:aws:secretsmanager:us-east-1:1:secret:other/x-123456789012")


async def test_pull_imports_image_into_templated_repository(
        ecr: Any, upstream: Registry, model_emulator: EmulatorProcess) -> None:
    name = prefix()
    digest, manifest, layers = await push_upstream(upstream, "library/app", "1.0")
    await ecr.create_repository_creation_template(
        prefix=name, appliedFor=["PULL_THROUGH_CACHE"], imageTagMutability="IMMUTABLE",
        resourceTags=[{"Key": "team", "Value": "cache"}], lifecyclePolicy=LIFECYCLE)
    await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=name,
                                             upstreamRegistryUrl=upstream.url)
    repository = f"{name}/library/app"
    got = await ecr.batch_get_image(repositoryName=repository, imageIds=[{"imageTag": "1.0"}])
    assert got["failures"] == []
    (image,) = got["images"]
    assert image["imageManifest"].encode() == manifest
    assert image["imageId"] == {"imageDigest": digest, "imageTag": "1.0"}

    (repo,) = (await ecr.describe_repositories(repositoryNames=[repository]))["repositories"]
    assert repo["imageTagMutability"] == "IMMUTABLE"  # from the template
    tags = await ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])
    assert tags["tags"] == [{"Key": "team", "Value": "cache"}]
    policy = await ecr.get_lifecycle_policy(repositoryName=repository)
    assert policy["lifecyclePolicyText"] == LIFECYCLE

    # Layers come when asked for, streamed from the upstream and kept.
    first, second = (digest_of(layer) for layer in layers)
    url = (await ecr.get_download_url_for_layer(repositoryName=repository,
                                                layerDigest=first))["downloadUrl"]
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert await response.read() == layers[0]
    checked = await ecr.batch_check_layer_availability(repositoryName=repository,
                                                       layerDigests=[second])
    assert checked["layers"][0]["layerAvailability"] == "AVAILABLE"
    assert checked["layers"][0]["layerSize"] == len(layers[1])
    for layer_digest in (first, second):
        blob = model_emulator.data_dir / "blobs" / "sha256" / layer_digest[7:9] / layer_digest[7:]
        assert blob.read_bytes() == layers[layer_digest == second]

    # Cached: served again without the upstream, also by digest.
    again = await ecr.batch_get_image(repositoryName=repository,
                                      imageIds=[{"imageDigest": digest}])
    assert again["images"][0]["imageManifest"].encode() == manifest


async def test_a_first_pull_by_digest_is_not_filled(ecr: Any, upstream: Registry) -> None:
    """As ECR (containers-roadmap #2837): an image not yet cached is fetched by tag only; by
    digest it is ImageNotFound, and nothing is created or asked of the upstream."""
    name = prefix()
    await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=name,
                                             upstreamRegistryUrl=upstream.url)
    digest, manifest, _ = await push_upstream(upstream, "library/pinned", "1.0")
    got = await ecr.batch_get_image(repositoryName=f"{name}/library/pinned",
                                    imageIds=[{"imageDigest": digest}])
    assert got["images"] == []
    assert got["failures"][0]["failureCode"] == "ImageNotFound", got["failures"]
    got = await ecr.batch_get_image(repositoryName=f"{name}/library/pinned",
                                    imageIds=[{"imageTag": "1.0"}])
    assert got["images"][0]["imageManifest"].encode() == manifest
    got = await ecr.batch_get_image(repositoryName=f"{name}/library/pinned",
                                    imageIds=[{"imageDigest": digest}])
    assert got["failures"] == [] and got["images"][0]["imageId"]["imageDigest"] == digest


async def _pulled_digest(ecr: Any, repository: str, tag: str) -> str:
    got = await ecr.batch_get_image(repositoryName=repository, imageIds=[{"imageTag": tag}])
    assert got["failures"] == [], got["failures"]
    return str(got["images"][0]["imageId"]["imageDigest"])


async def test_a_cached_tag_is_not_asked_again_within_a_day(ecr: Any,
                                                            upstream: Registry) -> None:
    name = prefix()
    await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=name,
                                             upstreamRegistryUrl=upstream.url)
    first, _, _ = await push_upstream(upstream, "library/daily", "stable")
    assert await _pulled_digest(ecr, f"{name}/library/daily", "stable") == first
    second, _, _ = await push_upstream(upstream, "library/daily", "stable")
    assert second != first
    assert await _pulled_digest(ecr, f"{name}/library/daily", "stable") == first


async def test_a_cached_tag_follows_its_upstream_once_its_check_is_old(tmp_path: Path) -> None:
    """ECR's user guide: "For subsequent pull requests of the cached image with a given tag,
    Amazon ECR checks the upstream registry for a new version of the image with that specific
    tag and attempts to update the image in your private registry at least once every 24
    hours." The interval is a setting: 0 makes every pull's check an old one."""
    registry = Registry(tmp_path / "moving").start()
    env = {"ECR_EMULATOR_PULL_THROUGH_REFRESH_SECONDS": "0"}
    with EmulatorProcess(tmp_path / "emulator", env=env) as emulator:
        async with ecr_client(emulator.url, retries={"total_max_attempts": 1}) as ecr:
            mutable, immutable = prefix(), prefix()
            await ecr.create_repository_creation_template(
                prefix=immutable, appliedFor=["PULL_THROUGH_CACHE"],
                imageTagMutability="IMMUTABLE")
            for name in (mutable, immutable):
                await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=name,
                                                         upstreamRegistryUrl=registry.url)
            try:
                first, _, _ = await push_upstream(registry, "library/app", "latest")
                for name in (mutable, immutable):
                    assert await _pulled_digest(ecr, f"{name}/library/app", "latest") == first
                second, _, layers = await push_upstream(registry, "library/app", "latest")
                repository = f"{mutable}/library/app"
                assert await _pulled_digest(ecr, repository, "latest") == second
                url = (await ecr.get_download_url_for_layer(
                    repositoryName=repository, layerDigest=digest_of(layers[0])))["downloadUrl"]
                async with aiohttp.ClientSession() as session, session.get(url) as response:
                    assert await response.read() == layers[0]
                listed = await ecr.list_images(repositoryName=repository)
                assert {(i["imageDigest"], i.get("imageTag")) for i in listed["imageIds"]} == {
                    (first, None), (second, "latest")}  # the old image stays, untagged
                # An immutable tag does not move.
                assert await _pulled_digest(ecr, f"{immutable}/library/app", "latest") == first
            finally:
                registry.stop()
            # The upstream gone: what is cached is still served.
            assert await _pulled_digest(ecr, repository, "latest") == second


async def test_a_failed_tag_check_is_not_made_again_on_every_pull(tmp_path: Path) -> None:
    """An upstream that stalls while a cached tag is due for its check: the pull that asks
    waits for it and is served the cached image, and the pulls after it are served at once
    rather than each waiting on (and asking) the stalled upstream again."""
    registry = Registry(tmp_path / "slow").start()
    stalled_seconds = 2.0

    async def stall(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(stalled_seconds)
        return web.Response(status=503)

    env = {"ECR_EMULATOR_PULL_THROUGH_REFRESH_SECONDS": "3"}
    try:
        async with Forwarder(("127.0.0.1", int(registry.url.rsplit(":", 1)[1]))) as upstream, \
                Server(stall) as stalled:
            with EmulatorProcess(tmp_path / "emulator", env=env) as emulator:
                async with ecr_client(emulator.url, retries={"total_max_attempts": 1}) as ecr:
                    name = prefix()
                    await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=name,
                                                             upstreamRegistryUrl=upstream.url)
                    first, _, _ = await push_upstream(registry, "library/app", "latest")
                    repository = f"{name}/library/app"
                    assert await _pulled_digest(ecr, repository, "latest") == first
                    await asyncio.sleep(3.2)  # the tag's check is due
                    upstream.target = ("127.0.0.1", int(stalled.url.rsplit(":", 1)[1]))
                    took = []
                    for _ in range(3):
                        started = time.monotonic()
                        assert await _pulled_digest(ecr, repository, "latest") == first
                        took.append(time.monotonic() - started)
                    assert took[0] >= stalled_seconds, took  # the due check was made
                    assert max(took[1:]) < 1.0, took
                    assert len(stalled.seen) == 1, stalled.seen
    finally:
        registry.stop()


async def test_upstream_down_and_missing_images(ecr: Any, upstream: Registry) -> None:
    down, up = prefix(), prefix()
    await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=down,
                                             upstreamRegistryUrl=dead_url())
    got = await ecr.batch_get_image(repositoryName=f"{down}/library/app",
                                    imageIds=[{"imageTag": "1.0"}])
    assert got["images"] == []
    assert got["failures"][0]["failureCode"] == "UpstreamUnavailable"
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):  # nothing half-created
        await ecr.describe_repositories(repositoryNames=[f"{down}/library/app"])
    valid = await ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix=down)
    assert valid["isValid"] is False and valid["failure"]

    await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=up,
                                             upstreamRegistryUrl=upstream.url)
    got = await ecr.batch_get_image(repositoryName=f"{up}/library/nothing",
                                    imageIds=[{"imageTag": "1.0"}])
    assert got["failures"][0]["failureCode"] == "ImageNotFound"


async def test_layer_fetch_after_upstream_went_down(ecr: Any, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "short-lived").start()
    try:
        _, _, layers = await push_upstream(registry, "team/tool", "v1")
        name = prefix()
        await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=name,
                                                 upstreamRegistryUrl=registry.url)
        repository = f"{name}/team/tool"
        got = await ecr.batch_get_image(repositoryName=repository,
                                        imageIds=[{"imageTag": "v1"}])
        assert got["failures"] == []
    finally:
        registry.stop()
    with pytest.raises(ecr.exceptions.UnableToGetUpstreamLayerException):
        await ecr.get_download_url_for_layer(repositoryName=repository,
                                             layerDigest=digest_of(layers[0]))


async def test_pull_with_a_credential(ecr: Any, private_upstream: Registry,
                                      model_emulator: EmulatorProcess) -> None:
    _, manifest, layers = await push_upstream(private_upstream, "private/app", "2.0",
                                              BASIC)
    write_secret(model_emulator, {"username": USER, "accessToken": PASSWORD})
    name, anonymous = prefix(), prefix()
    await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=name,
                                             upstreamRegistryUrl=private_upstream.url,
                                             credentialArn=SECRET_ARN)
    got = await ecr.batch_get_image(repositoryName=f"{name}/private/app",
                                    imageIds=[{"imageTag": "2.0"}])
    assert got["images"][0]["imageManifest"].encode() == manifest
    url = (await ecr.get_download_url_for_layer(repositoryName=f"{name}/private/app",
                                                layerDigest=digest_of(layers[1])))["downloadUrl"]
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert await response.read() == layers[1]

    await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=anonymous,
                                             upstreamRegistryUrl=private_upstream.url)
    got = await ecr.batch_get_image(repositoryName=f"{anonymous}/private/app",
                                    imageIds=[{"imageTag": "2.0"}])
    assert got["failures"][0]["failureCode"] == "UpstreamAccessDenied"

    # A secret whose token is wrong: denied; one that cannot be used: the documented error.
    write_secret(model_emulator, {"username": USER, "accessToken": "wrong"})
    got = await ecr.batch_get_image(repositoryName=f"{name}/private/other",
                                    imageIds=[{"imageTag": "2.0"}])
    assert got["failures"][0]["failureCode"] == "UpstreamAccessDenied"
    write_secret(model_emulator, {"username": USER})
    with pytest.raises(ecr.exceptions.UnableToGetUpstreamImageException):
        await ecr.batch_get_image(repositoryName=f"{name}/private/other",
                                  imageIds=[{"imageTag": "2.0"}])
    with pytest.raises(ecr.exceptions.UnableToDecryptSecretValueException):
        await ecr.update_pull_through_cache_rule(ecrRepositoryPrefix=name,
                                                 credentialArn=SECRET_ARN)


async def test_rules_and_cached_images_survive_a_restart(
        ecr: Any, upstream: Registry, model_emulator: EmulatorProcess) -> None:
    name = prefix()
    digest, _, _ = await push_upstream(upstream, "library/durable", "1")
    await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=name,
                                             upstreamRegistryUrl=upstream.url)
    await ecr.batch_get_image(repositoryName=f"{name}/library/durable",
                              imageIds=[{"imageTag": "1"}])
    model_emulator.kill9()
    model_emulator.start()
    async with ecr_client(model_emulator.url) as fresh:
        rules = await fresh.describe_pull_through_cache_rules(ecrRepositoryPrefixes=[name])
        images = await fresh.describe_images(repositoryName=f"{name}/library/durable")
    assert rules["pullThroughCacheRules"][0]["upstreamRegistryUrl"] == upstream.url
    assert [d["imageDigest"] for d in images["imageDetails"]] == [digest]


async def test_pull_of_an_index_imports_its_children(ecr: Any, upstream: Registry) -> None:
    child_digest, child, _ = await push_upstream(upstream, "multi/app", "amd64")
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                       "digest": child_digest, "size": len(child),
                                       "platform": {"architecture": "amd64", "os": "linux"}}]})
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{upstream.url}/v2/multi/app/manifests/latest", data=index,
                               headers={"Content-Type":
                                        "application/vnd.oci.image.index.v1+json"}) as r:
            assert r.status == 201
    name = prefix()
    await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=name,
                                             upstreamRegistryUrl=upstream.url)
    got = await ecr.batch_get_image(repositoryName=f"{name}/multi/app",
                                    imageIds=[{"imageTag": "latest"}])
    assert got["images"][0]["imageManifest"] == index
    child_got = await ecr.batch_get_image(repositoryName=f"{name}/multi/app",
                                          imageIds=[{"imageDigest": child_digest}])
    assert child_got["images"][0]["imageManifest"].encode() == child


async def test_no_rule_no_import(ecr: Any) -> None:
    with pytest.raises(ClientError) as info:
        await ecr.batch_get_image(repositoryName=f"{prefix()}/library/app",
                                  imageIds=[{"imageTag": "1"}])
    assert info.value.response["Error"]["Code"] == "RepositoryNotFoundException"


async def test_large_upstream_layer_is_streamed(ecr: Any, upstream: Registry,
                                                tmp_path: Path) -> None:
    """A 192 MiB layer crosses the emulator without being held: its peak RSS grows by far
    less than the layer."""
    size = 192 * 1024 * 1024
    layer = os.urandom(size)
    async with aiohttp.ClientSession() as session:
        await OciClient(session, upstream.url).push_image("big/layer", "v1", [layer])
    layer_digest = digest_of(layer)
    del layer
    with EmulatorProcess(tmp_path / "rss") as emulator:
        async with ecr_client(emulator.url) as client:
            name = prefix()
            await client.create_pull_through_cache_rule(ecrRepositoryPrefix=name,
                                                        upstreamRegistryUrl=upstream.url)
            await client.batch_get_image(repositoryName=f"{name}/big/layer",
                                         imageIds=[{"imageTag": "v1"}])
            before = emulator.peak_rss()
            await client.get_download_url_for_layer(repositoryName=f"{name}/big/layer",
                                                    layerDigest=layer_digest)
            grown = emulator.peak_rss() - before
        blob = emulator.data_dir / "blobs" / "sha256" / layer_digest[7:9] / layer_digest[7:]
        assert blob.stat().st_size == size
    assert grown < 48 * 1024 * 1024, f"peak RSS grew by {grown >> 20} MiB"
