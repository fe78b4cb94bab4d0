"""Private image replication between the registries one emulator holds (other regions, other
accounts), through aiobotocore over HTTP: the image, its layers, an index's children and the
tag reach the destination, whose repository follows its REPLICATION creation template, and
DescribeImageReplicationStatus reports each copy."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.emulator.api.helpers import digest, image_manifest, index_manifest, push_image
from tests.support.emulator import EmulatorProcess, ecr_client, replication_statuses

ACCOUNT = "123456789012"
OTHER_ACCOUNT = "210987654321"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorProcess]:
    with EmulatorProcess(tmp_path / "ecr") as emu:
        yield emu


async def test_push_replicates_to_another_region(emulator: EmulatorProcess) -> None:
    async with ecr_client(emulator.url) as east, \
            ecr_client(emulator.url, region="eu-west-1") as west:
        # The destination registry's REPLICATION template shapes the repository it gets.
        await west.create_repository_creation_template(
            prefix="prod", appliedFor=["REPLICATION"], imageTagMutability="IMMUTABLE",
            resourceTags=[{"Key": "team", "Value": "platform"}])
        await east.create_repository(repositoryName="prod/app")
        old, _ = await push_image(east, "prod/app", "before")
        await east.put_replication_configuration(replicationConfiguration={"rules": [{
            "destinations": [{"region": "eu-west-1", "registryId": ACCOUNT}],
            "repositoryFilters": [{"filter": "prod", "filterType": "PREFIX_MATCH"}]}]})
        layer = b"replicated layer " + bytes(range(256))
        image, text = await push_image(east, "prod/app", "v1", layers=[layer])

        assert await replication_statuses(east, "prod/app", {"imageTag": "v1"}) == [
            {"region": "eu-west-1", "registryId": ACCOUNT, "status": "COMPLETE"}]
        # Content pushed before replication covered the repository is not replicated.
        assert await replication_statuses(east, "prod/app", {"imageDigest": old}) == []

        (repository,) = (await west.describe_repositories(
            repositoryNames=["prod/app"]))["repositories"]
        assert repository["repositoryUri"] == (
            f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/prod/app")
        assert repository["imageTagMutability"] == "IMMUTABLE"
        tags = await west.list_tags_for_resource(resourceArn=repository["repositoryArn"])
        assert tags["tags"] == [{"Key": "team", "Value": "platform"}]
        got = await west.batch_get_image(repositoryName="prod/app", imageIds=[{"imageTag": "v1"}])
        assert got["images"][0]["imageManifest"] == text
        assert got["images"][0]["imageId"]["imageDigest"] == image
        listed = await west.list_images(repositoryName="prod/app")
        assert [i["imageDigest"] for i in listed["imageIds"]] == [image]  # not "before"
        url = (await west.get_download_url_for_layer(repositoryName="prod/app",
                                                     layerDigest=digest(layer)))["downloadUrl"]
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200 and await response.read() == layer

        # A repository outside the filters stays where it is.
        await east.create_repository(repositoryName="dev/app")
        await push_image(east, "dev/app", "v1")
        assert await replication_statuses(east, "dev/app", {"imageTag": "v1"}) == []
        with pytest.raises(west.exceptions.RepositoryNotFoundException):
            await west.describe_repositories(repositoryNames=["dev/app"])
        # The source region's registry is not the destination's: eu-west-1 has its own.
        assert [r["repositoryName"] for r in
                (await west.describe_repositories())["repositories"]] == ["prod/app"]


async def test_index_and_children_replicate(emulator: EmulatorProcess) -> None:
    async with ecr_client(emulator.url) as east, \
            ecr_client(emulator.url, region="us-west-2") as west:
        await east.put_replication_configuration(replicationConfiguration={"rules": [{
            "destinations": [{"region": "us-west-2", "registryId": ACCOUNT}]}]})
        await east.create_repository(repositoryName="multi")
        children = []
        for arch in ("amd64", "arm64"):
            _, child = await push_image(east, "multi", None, config=json.dumps(
                {"architecture": arch, "os": "linux"}).encode())
            children.append(child)
        text = index_manifest(children)
        await east.put_image(repositoryName="multi", imageManifest=text, imageTag="v2")
        assert (await replication_statuses(east, "multi", {"imageTag": "v2"}))[0][
            "status"] == "COMPLETE"
        got = await west.batch_get_image(repositoryName="multi", imageIds=[
            {"imageTag": "v2"}, *({"imageDigest": digest(c)} for c in children)])
        assert not got["failures"]
        assert {i["imageManifest"] for i in got["images"]} == {text, *children}
        # The template-less destination repository has ECR's defaults.
        (repository,) = (await west.describe_repositories())["repositories"]
        assert repository["imageTagMutability"] == "MUTABLE"


async def test_cross_account_needs_the_destination_registry_policy(
        emulator: EmulatorProcess) -> None:
    other_key = "AKIDOTHERACCOUNT01"
    emulator.add_key(other_key, account_id=OTHER_ACCOUNT)
    async with ecr_client(emulator.url) as source, \
            ecr_client(emulator.url, region="us-west-2", access_key_id=other_key) as other:
        assert (await other.describe_registry())["registryId"] == OTHER_ACCOUNT
        await source.put_replication_configuration(replicationConfiguration={"rules": [{
            "destinations": [{"region": "us-west-2", "registryId": OTHER_ACCOUNT}]}]})
        await source.create_repository(repositoryName="shared/app")
        await push_image(source, "shared/app", "v1")
        assert await replication_statuses(source, "shared/app", {"imageTag": "v1"}) == [
            {"region": "us-west-2", "registryId": OTHER_ACCOUNT, "status": "FAILED",
             "failureCode": "AccessDeniedException"}]
        with pytest.raises(other.exceptions.RepositoryNotFoundException):
            await other.describe_repositories(repositoryNames=["shared/app"])

        await other.put_registry_policy(policyText=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Sid": "replication", "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
                "Resource": f"arn:aws:ecr:us-west-2:{OTHER_ACCOUNT}:repository/*"}]}))
        _, text = await push_image(source, "shared/app", "v2")
        assert await replication_statuses(source, "shared/app", {"imageTag": "v2"}) == [
            {"region": "us-west-2", "registryId": OTHER_ACCOUNT, "status": "COMPLETE"}]
        got = await other.batch_get_image(repositoryName="shared/app",
                                          imageIds=[{"imageTag": "v2"}])
        assert got["images"][0]["imageManifest"] == text
        assert got["images"][0]["registryId"] == OTHER_ACCOUNT
        # The emulator's own account still has no repository in us-west-2.
        async with ecr_client(emulator.url, region="us-west-2") as mine:
            assert (await mine.describe_repositories())["repositories"] == []


async def test_immutable_tag_in_destination_fails_the_copy(emulator: EmulatorProcess) -> None:
    async with ecr_client(emulator.url) as east, \
            ecr_client(emulator.url, region="eu-central-1") as central:
        await central.create_repository(repositoryName="locked",
                                        imageTagMutability="IMMUTABLE")
        await push_image(central, "locked", "v1")
        await east.put_replication_configuration(replicationConfiguration={"rules": [{
            "destinations": [{"region": "eu-central-1", "registryId": ACCOUNT}]}]})
        await east.create_repository(repositoryName="locked")
        await push_image(east, "locked", "v1", layers=[image_manifest(b"{}", []).encode()])
        assert await replication_statuses(east, "locked", {"imageTag": "v1"}) == [
            {"region": "eu-central-1", "registryId": ACCOUNT, "status": "FAILED",
             "failureCode": "ImageTagAlreadyExistsException"}]


async def test_lifecycle_runs_in_another_registry(emulator: EmulatorProcess) -> None:
    """``POST /_emulator/lifecycle/run?account=…&region=…`` applies another registry's
    policies (the schedule applies every opened registry's)."""
    async with ecr_client(emulator.url, region="eu-west-1") as west:
        await west.create_repository(repositoryName="old/app")
        first, _ = await push_image(west, "old/app", "v1")
        await push_image(west, "old/app", "v2")
        await west.put_lifecycle_policy(repositoryName="old/app", lifecyclePolicyText=json.dumps(
            {"rules": [{"rulePriority": 1, "selection": {
                "tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
                "action": {"type": "expire"}}]}))
        async with aiohttp.ClientSession() as session:
            for region, status in (("ap-south-2", 404), ("eu-west-1", 200)):
                target = (f"{emulator.url}/_emulator/lifecycle/run?account={ACCOUNT}"
                          f"&region={region}")
                async with session.post(target,
                                        headers=emulator.admin_headers("POST", target)) as r:
                    assert r.status == status, await r.text()
                    ran = await r.json()
        assert [e["imageDigest"] for e in ran["expired"]["old/app"]] == [first]
        left = await west.list_images(repositoryName="old/app")
        assert [i["imageTag"] for i in left["imageIds"]] == ["v2"]


async def test_no_status_outlives_its_image(emulator: EmulatorProcess) -> None:
    """A deleted image's statuses go with it: DescribeImageReplicationStatus answers
    ImageNotFoundException, the database keeps no row, and the same manifest pushed again
    after replication was turned off has no status of its first push."""
    async with ecr_client(emulator.url) as east:
        await east.put_replication_configuration(replicationConfiguration={"rules": [{
            "destinations": [{"region": "eu-west-3", "registryId": ACCOUNT}]}]})
        await east.create_repository(repositoryName="gone/app")
        image, text = await push_image(east, "gone/app", "v1")
        assert [s["status"] for s in await replication_statuses(
            east, "gone/app", {"imageTag": "v1"})] == ["COMPLETE"]

        await east.batch_delete_image(repositoryName="gone/app",
                                      imageIds=[{"imageDigest": image}])
        for image_id in ({"imageDigest": image}, {"imageTag": "v1"}):
            with pytest.raises(east.exceptions.ImageNotFoundException):
                await east.describe_image_replication_status(repositoryName="gone/app",
                                                             imageId=image_id)
        with sqlite3.connect(emulator.data_dir / "ecr.sqlite3") as db:
            assert db.execute("SELECT count(*) FROM image_replications").fetchone() == (0,)

        await east.put_replication_configuration(replicationConfiguration={"rules": []})
        await east.put_image(repositoryName="gone/app", imageManifest=text, imageTag="v1")
        assert await replication_statuses(east, "gone/app", {"imageTag": "v1"}) == []
        # A repository deleted with its images takes their statuses too.
        await east.put_replication_configuration(replicationConfiguration={"rules": [{
            "destinations": [{"region": "eu-west-3", "registryId": ACCOUNT}]}]})
        await push_image(east, "gone/app", "v2")
        await replication_statuses(east, "gone/app", {"imageTag": "v2"})
        await east.delete_repository(repositoryName="gone/app", force=True)
        with sqlite3.connect(emulator.data_dir / "ecr.sqlite3") as db:
            assert db.execute("SELECT count(*) FROM image_replications").fetchone() == (0,)
