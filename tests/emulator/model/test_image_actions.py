"""Actions on one repository or image: scanning, tag mutability, storage class (archive and
restore), replication and signing statuses."""

from __future__ import annotations

from typing import Any

import pytest

from tests.emulator.api.helpers import index_manifest, push_image


async def test_scan_and_findings(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    digest, _ = await push_image(ecr, repo, "v1")
    with pytest.raises(ecr.exceptions.ScanNotFoundException):
        await ecr.describe_image_scan_findings(repositoryName=repo, imageId={"imageTag": "v1"})
    started = await ecr.start_image_scan(repositoryName=repo, imageId={"imageTag": "v1"})
    assert started["imageScanStatus"]["status"] == "IN_PROGRESS"
    assert started["imageId"] == {"imageDigest": digest, "imageTag": "v1"}
    findings = await ecr.describe_image_scan_findings(repositoryName=repo,
                                                      imageId={"imageDigest": digest})
    assert findings["imageScanStatus"]["status"] == "COMPLETE"
    assert findings["imageScanFindings"]["findings"] == []
    assert findings["imageScanFindings"]["findingSeverityCounts"] == {}
    with pytest.raises(ecr.exceptions.LimitExceededException):  # once a day
        await ecr.start_image_scan(repositoryName=repo, imageId={"imageDigest": digest})
    with pytest.raises(ecr.exceptions.ImageNotFoundException):
        await ecr.start_image_scan(repositoryName=repo, imageId={"imageTag": "absent"})
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        await ecr.start_image_scan(repositoryName=repo + "x", imageId={"imageTag": "v1"})


async def test_index_is_not_scanned(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    _, child = await push_image(ecr, repo, None)
    await ecr.put_image(repositoryName=repo, imageManifest=index_manifest([child]),
                        imageTag="multi")
    with pytest.raises(ecr.exceptions.UnsupportedImageTypeException):
        await ecr.start_image_scan(repositoryName=repo, imageId={"imageTag": "multi"})


async def test_scan_on_push(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    put = await ecr.put_image_scanning_configuration(
        repositoryName=repo, imageScanningConfiguration={"scanOnPush": True})
    assert put["imageScanningConfiguration"] == {"scanOnPush": True}
    (described,) = (await ecr.describe_repositories(repositoryNames=[repo]))["repositories"]
    assert described["imageScanningConfiguration"] == {"scanOnPush": True}
    await push_image(ecr, repo, "scanned")
    findings = await ecr.describe_image_scan_findings(repositoryName=repo,
                                                      imageId={"imageTag": "scanned"})
    assert findings["imageScanStatus"]["status"] == "COMPLETE"
    with pytest.raises(ecr.exceptions.InvalidParameterException):  # the repository name pattern
        await ecr.put_image_scanning_configuration(
            repositoryName="Not A Name", imageScanningConfiguration={"scanOnPush": True})


async def test_put_image_tag_mutability(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    await push_image(ecr, repo, "stable")
    put = await ecr.put_image_tag_mutability(repositoryName=repo,
                                             imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
                                             imageTagMutabilityExclusionFilters=[
                                                 {"filterType": "WILDCARD", "filter": "dev-*"}])
    assert put["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    with pytest.raises(ecr.exceptions.ImageTagAlreadyExistsException):
        await push_image(ecr, repo, "stable")
    await push_image(ecr, repo, "dev-1")
    await push_image(ecr, repo, "dev-1")  # excluded: still mutable
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        await ecr.put_image_tag_mutability(repositoryName=repo, imageTagMutability="IMMUTABLE",
                                           imageTagMutabilityExclusionFilters=[
                                               {"filterType": "WILDCARD", "filter": "x"}])
    with pytest.raises(ecr.exceptions.InvalidParameterException):  # enum, this action's code
        await ecr.put_image_tag_mutability(repositoryName=repo, imageTagMutability="SOMETIMES")


async def test_archive_and_restore(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    digest, text = await push_image(ecr, repo, "old")
    archived = await ecr.update_image_storage_class(repositoryName=repo,
                                                    imageId={"imageTag": "old"},
                                                    targetStorageClass="ARCHIVE")
    assert archived["imageStatus"] == "ARCHIVED"
    got = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "old"}])
    assert got["images"] == [] and got["failures"][0]["failureCode"] == "ImageNotFound"
    details = await ecr.describe_images(repositoryName=repo, imageIds=[{"imageDigest": digest}])
    assert details["imageDetails"][0]["imageStatus"] == "ARCHIVED"
    assert (await ecr.list_images(repositoryName=repo))["imageIds"] == []
    listed = await ecr.list_images(repositoryName=repo, filter={"imageStatus": "ARCHIVED"})
    assert listed["imageIds"] == [{"imageDigest": digest, "imageTag": "old"}]
    with pytest.raises(ecr.exceptions.ImageArchivedException):
        await ecr.start_image_scan(repositoryName=repo, imageId={"imageDigest": digest})

    restored = await ecr.update_image_storage_class(repositoryName=repo,
                                                    imageId={"imageDigest": digest},
                                                    targetStorageClass="STANDARD")
    assert restored["imageStatus"] == "ACTIVATING"
    got = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "old"}])
    assert got["images"][0]["imageManifest"] == text
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        await ecr.update_image_storage_class(repositoryName=repo, imageId={"imageTag": "old"},
                                             targetStorageClass="GLACIER")
    with pytest.raises(ecr.exceptions.ImageNotFoundException):
        await ecr.update_image_storage_class(repositoryName=repo, imageId={"imageTag": "nope"},
                                             targetStorageClass="ARCHIVE")


async def test_a_restored_image_says_when_it_was_restored(ecr: Any, repo: str) -> None:
    """ImageDetail.lastActivatedAt: "when the image was last restored from Amazon ECR archive
    to Amazon ECR standard", by UpdateImageStorageClass or by pushing the image again."""
    await ecr.create_repository(repositoryName=repo)
    digest, text = await push_image(ecr, repo, "v1")
    image_id = {"imageDigest": digest}

    async def detail() -> dict[str, Any]:
        found = await ecr.describe_images(repositoryName=repo, imageIds=[image_id])
        return dict(found["imageDetails"][0])

    assert "lastActivatedAt" not in await detail()  # never archived
    await ecr.update_image_storage_class(repositoryName=repo, imageId=image_id,
                                         targetStorageClass="ARCHIVE")
    archived = await detail()
    assert "lastActivatedAt" not in archived
    await ecr.update_image_storage_class(repositoryName=repo, imageId=image_id,
                                         targetStorageClass="STANDARD")
    restored = await detail()
    assert restored["lastActivatedAt"] >= archived["lastArchivedAt"]
    await ecr.update_image_storage_class(repositoryName=repo, imageId=image_id,
                                         targetStorageClass="STANDARD")  # already standard
    assert (await detail())["lastActivatedAt"] == restored["lastActivatedAt"]

    await ecr.update_image_storage_class(repositoryName=repo, imageId=image_id,
                                         targetStorageClass="ARCHIVE")
    await ecr.put_image(repositoryName=repo, imageManifest=text, imageTag="v1")  # restores
    pushed = await detail()
    assert pushed["imageStatus"] == "ACTIVE"
    assert pushed["lastActivatedAt"] >= pushed["lastArchivedAt"] > restored["lastActivatedAt"]


async def test_index_child_moves_with_its_index(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    child_digest, child = await push_image(ecr, repo, None)
    await ecr.put_image(repositoryName=repo, imageManifest=index_manifest([child]),
                        imageTag="multi")
    with pytest.raises(ecr.exceptions.ImageStorageClassUpdateNotSupportedException):
        await ecr.update_image_storage_class(repositoryName=repo,
                                             imageId={"imageDigest": child_digest},
                                             targetStorageClass="ARCHIVE")
    await ecr.update_image_storage_class(repositoryName=repo, imageId={"imageTag": "multi"},
                                         targetStorageClass="ARCHIVE")
    got = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageDigest": child_digest}])
    assert got["failures"][0]["failureCode"] == "ImageNotFound"


async def test_replication_and_signing_statuses(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    digest, _ = await push_image(ecr, repo, "v1")
    await ecr.put_replication_configuration(replicationConfiguration={"rules": [
        {"destinations": [{"region": "eu-west-1", "registryId": "123456789012"}]}]})
    try:
        status = await ecr.describe_image_replication_status(repositoryName=repo,
                                                             imageId={"imageTag": "v1"})
    finally:
        await ecr.put_replication_configuration(replicationConfiguration={"rules": []})
    assert status["imageId"] == {"imageDigest": digest, "imageTag": "v1"}
    # Pushed before replication was configured: never replicated (test_replication.py).
    assert status["replicationStatuses"] == []
    signing = await ecr.describe_image_signing_status(repositoryName=repo,
                                                      imageId={"imageDigest": digest})
    assert signing["signingStatuses"] == []
    for call in (ecr.describe_image_replication_status, ecr.describe_image_signing_status):
        with pytest.raises(ecr.exceptions.ImageNotFoundException):
            await call(repositoryName=repo, imageId={"imageTag": "absent"})
