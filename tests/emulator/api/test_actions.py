"""Every implemented ECR action's happy path, driven through aiobotocore over HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from typing import Any

import aiohttp
import orjson
import pytest
from botocore.exceptions import ClientError

from tests.emulator.api.helpers import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    MiB,
    digest,
    ensure_layer,
    image_manifest,
    index_manifest,
    push_image,
    push_layer,
)
from tests.support.emulator import ACCOUNT_ID, REGION, EmulatorProcess, ecr_client


async def test_repository_lifecycle(ecr: Any, repo: str) -> None:
    created = (await ecr.create_repository(
        repositoryName=repo, imageTagMutability="IMMUTABLE",
        imageScanningConfiguration={"scanOnPush": True},
        encryptionConfiguration={"encryptionType": "KMS", "kmsKey": "alias/team"},
        tags=[{"Key": "team", "Value": "registry"}],
    ))["repository"]
    assert created["repositoryArn"] == f"arn:aws:ecr:{REGION}:{ACCOUNT_ID}:repository/{repo}"
    assert created["registryId"] == ACCOUNT_ID
    assert created["repositoryUri"] == f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/{repo}"
    assert abs(created["createdAt"].timestamp() - time.time()) < 60
    assert created["imageTagMutability"] == "IMMUTABLE"
    assert created["imageScanningConfiguration"] == {"scanOnPush": True}
    assert created["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": "alias/team"}

    described = await ecr.describe_repositories(repositoryNames=[repo])
    assert described["repositories"] == [created]

    deleted = await ecr.delete_repository(repositoryName=repo)
    assert deleted["repository"] == created
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        await ecr.describe_repositories(repositoryNames=[repo])


async def test_repository_defaults(ecr: Any, repo: str) -> None:
    created = (await ecr.create_repository(repositoryName=repo))["repository"]
    assert created["imageTagMutability"] == "MUTABLE"
    assert created["imageScanningConfiguration"] == {"scanOnPush": False}
    assert created["encryptionConfiguration"] == {"encryptionType": "AES256"}
    assert "imageTagMutabilityExclusionFilters" not in created


async def test_describe_repositories_pages(emulator: EmulatorProcess) -> None:
    async with ecr_client(emulator.url) as ecr:
        names = [f"page/repo-{i:02d}" for i in range(7)]
        for name in names:
            await ecr.create_repository(repositoryName=name)
        seen: list[str] = []
        token: dict[str, str] = {}
        pages = 0
        while True:
            page = await ecr.describe_repositories(maxResults=3, **token)
            seen += [r["repositoryName"] for r in page["repositories"]]
            pages += 1
            if "nextToken" not in page:
                break
            token = {"nextToken": page["nextToken"]}
        assert seen == names and pages == 3
        everything = await ecr.describe_repositories()
        assert [r["repositoryName"] for r in everything["repositories"]] == names
        paginator = ecr.get_paginator("describe_repositories")
        listed = [r["repositoryName"] async for p in paginator.paginate(PaginationConfig={
            "PageSize": 2}) for r in p["repositories"]]
        assert listed == names


async def test_multi_part_layer_upload(emulator: EmulatorProcess, repo: str) -> None:
    async with ecr_client(emulator.url) as ecr:
        await ecr.create_repository(repositoryName=repo)
        data = os.urandom(11 * MiB + 5)
        started = await ecr.initiate_layer_upload(repositoryName=repo)
        assert started["partSize"] == 10 * MiB
        upload_id = started["uploadId"]
        offsets = [(0, 5 * MiB), (5 * MiB, 10 * MiB), (10 * MiB, len(data))]
        for first, end in offsets:
            answer = await ecr.upload_layer_part(
                repositoryName=repo, uploadId=upload_id, partFirstByte=first,
                partLastByte=end - 1, layerPartBlob=data[first:end])
            assert answer["lastByteReceived"] == end - 1
            assert (answer["registryId"], answer["repositoryName"], answer["uploadId"]) == (
                ACCOUNT_ID, repo, upload_id)
        before = await ecr.batch_check_layer_availability(repositoryName=repo,
                                                          layerDigests=[digest(data)])
        assert before["layers"] == []
        assert before["failures"][0]["failureCode"] == "MissingLayerDigest"
        done = await ecr.complete_layer_upload(repositoryName=repo, uploadId=upload_id,
                                               layerDigests=[digest(data)])
        assert done["layerDigest"] == digest(data) and done["uploadId"] == upload_id
        after = await ecr.batch_check_layer_availability(repositoryName=repo,
                                                         layerDigests=[digest(data)])
        assert after["layers"] == [{"layerDigest": digest(data), "layerAvailability": "AVAILABLE",
                                    "layerSize": len(data)}]
        # The layer belongs to that repository only.
        await ecr.create_repository(repositoryName=repo + "-other")
        other = await ecr.batch_check_layer_availability(repositoryName=repo + "-other",
                                                         layerDigests=[digest(data)])
        assert other["layers"] == []


async def test_batch_check_layer_availability(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    _, _text = await push_image(ecr, repo, layers=[b"layer one"])
    layer = digest(b"layer one")
    missing = "sha256:" + "0" * 64
    result = await ecr.batch_check_layer_availability(
        repositoryName=repo, layerDigests=[layer, missing, "not-a-digest", ""])
    assert result["layers"] == [{"layerDigest": layer, "layerAvailability": "AVAILABLE",
                                 "layerSize": 9, "mediaType": "application/vnd.oci.image.layer"
                                 ".v1.tar+gzip"}]
    codes = {f["layerDigest"]: f["failureCode"] for f in result["failures"]}
    assert codes == {missing: "MissingLayerDigest", "not-a-digest": "InvalidLayerDigest",
                     "": "MissingLayerDigest"}


async def test_configurable_part_size(tmp_path: Any) -> None:
    env = {"ECR_EMULATOR_PART_SIZE": str(6 * MiB)}
    with EmulatorProcess(tmp_path / "ecr", env=env) as emulator:
        async with ecr_client(emulator.url) as ecr:
            await ecr.create_repository(repositoryName="sized")
            started = await ecr.initiate_layer_upload(repositoryName="sized")
            assert started["partSize"] == 6 * MiB


async def test_put_and_get_image_byte_exact(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    config, layers = b'{"os":"linux"}', [os.urandom(100), os.urandom(200)]
    for blob in [config, *layers]:
        await push_layer(ecr, repo, blob)
    # Odd whitespace, key order and non-ASCII text must come back exactly as pushed.
    text = image_manifest(config, layers, annotations={"note": "caf\u00e9 \u2603"}).replace(
        "\n", "\r\n ")
    put = (await ecr.put_image(repositoryName=repo, imageManifest=text, imageTag="v1"))["image"]
    assert put == {"registryId": ACCOUNT_ID, "repositoryName": repo,
                   "imageId": {"imageDigest": digest(text), "imageTag": "v1"},
                   "imageManifest": text, "imageManifestMediaType": OCI_MANIFEST}
    got = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])
    assert got["failures"] == []
    assert got["images"] == [put]
    by_digest = await ecr.batch_get_image(repositoryName=repo,
                                          imageIds=[{"imageDigest": digest(text)}])
    assert by_digest["images"][0]["imageId"] == {"imageDigest": digest(text)}
    assert by_digest["images"][0]["imageManifest"] == text


async def test_put_image_media_type_from_parameter(ecr: Any, repo: str) -> None:
    """An OCI manifest without mediaType is accepted when imageManifestMediaType says it."""
    await ecr.create_repository(repositoryName=repo)
    config, layer = b"{}", b"x"
    for blob in (config, layer):
        await push_layer(ecr, repo, blob)
    text = image_manifest(config, [layer], media_type=None)
    put = await ecr.put_image(repositoryName=repo, imageManifest=text,
                              imageManifestMediaType=OCI_MANIFEST, imageDigest=digest(text))
    assert put["image"]["imageId"] == {"imageDigest": digest(text)}
    assert put["image"]["imageManifestMediaType"] == OCI_MANIFEST


async def test_docker_schema2_image(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    config, layer = b'{"architecture":"arm64"}', os.urandom(300)
    for blob in (config, layer):
        await push_layer(ecr, repo, blob)
    text = image_manifest(config, [layer], media_type=DOCKER_MANIFEST, config_type=DOCKER_CONFIG,
                          layer_type=DOCKER_LAYER)
    await ecr.put_image(repositoryName=repo, imageManifest=text, imageTag="docker")
    detail = (await ecr.describe_images(repositoryName=repo))["imageDetails"][0]
    assert detail["imageManifestMediaType"] == DOCKER_MANIFEST
    assert detail["artifactMediaType"] == DOCKER_CONFIG
    assert detail["imageSizeInBytes"] == 300


async def test_tag_moves_and_old_image_stays_untagged(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    first, _ = await push_image(ecr, repo, "latest")
    second, _ = await push_image(ecr, repo, "latest")
    tagged = await ecr.list_images(repositoryName=repo, filter={"tagStatus": "TAGGED"})
    assert tagged["imageIds"] == [{"imageDigest": second, "imageTag": "latest"}]
    untagged = await ecr.list_images(repositoryName=repo, filter={"tagStatus": "UNTAGGED"})
    assert untagged["imageIds"] == [{"imageDigest": first}]
    everything = await ecr.list_images(repositoryName=repo)
    assert everything["imageIds"] == [{"imageDigest": first},
                                      {"imageDigest": second, "imageTag": "latest"}]


async def test_one_image_many_tags(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    image, text = await push_image(ecr, repo, "a")
    for tag in ("b", "c"):
        await ecr.put_image(repositoryName=repo, imageManifest=text, imageTag=tag)
    ids = (await ecr.list_images(repositoryName=repo))["imageIds"]
    assert ids == [{"imageDigest": image, "imageTag": t} for t in ("a", "b", "c")]
    details = (await ecr.describe_images(repositoryName=repo))["imageDetails"]
    assert len(details) == 1 and details[0]["imageTags"] == ["a", "b", "c"]



async def test_tags_take_ecr_grammar_not_only_oci(ecr: Any, repo: str) -> None:
    """ECR takes any of [a-zA-Z0-9-_.] first (OCI wants a word character): a tag made
    outside the gateway, "-rc" or ".hidden", is stored and found."""
    await ecr.create_repository(repositoryName=repo)
    image, text = await push_image(ecr, repo, "a")
    for tag in ("-rc", ".hidden", "-"):
        await ecr.put_image(repositoryName=repo, imageManifest=text, imageTag=tag)
        found = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": tag}])
        assert [i["imageId"]["imageDigest"] for i in found["images"]] == [image]
    with pytest.raises(ClientError) as refused:
        await ecr.put_image(repositoryName=repo, imageManifest=text, imageTag="a:b")
    assert refused.value.response["Error"]["Code"] == "InvalidParameterException"


async def test_a_tag_outside_ecrs_grammar_is_refused_in_ecrs_words(ecr: Any, repo: str) -> None:
    """PutImage and the actions naming one image refuse such a tag whole, with the text ECR
    answers (quoted by its users from PutImage, DescribeImages and DescribeImageScanFindings);
    BatchGetImage reports it as its failure InvalidImageTag."""
    await ecr.create_repository(repositoryName=repo)
    _, text = await push_image(ecr, repo, "a")
    ecr_words = ("Invalid parameter at 'imageTag' failed to satisfy constraint: 'must satisfy "
                 "regular expression '[a-zA-Z0-9-_.]+''")
    calls = [ecr.put_image(repositoryName=repo, imageManifest=text, imageTag="20230616+1"),
             ecr.describe_images(repositoryName=repo, imageIds=[{"imageTag": "20230616+1"}]),
             ecr.describe_image_scan_findings(repositoryName=repo,
                                              imageId={"imageTag": "20230616+1"})]
    for call in calls:
        with pytest.raises(ecr.exceptions.InvalidParameterException) as refused:
            await call
        assert refused.value.response["Error"]["Message"] == ecr_words
    got = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "20230616+1"}])
    assert [f["failureCode"] for f in got["failures"]] == ["InvalidImageTag"]

async def test_list_images_pages(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    pushed = []
    for i in range(5):
        image, text = await push_image(ecr, repo, f"t{i}")
        await ecr.put_image(repositoryName=repo, imageManifest=text, imageTag=f"extra{i}")
        pushed += [{"imageDigest": image, "imageTag": f"extra{i}"},
                   {"imageDigest": image, "imageTag": f"t{i}"}]
    seen: list[dict[str, str]] = []
    kwargs: dict[str, Any] = {"maxResults": 3}
    while True:
        page = await ecr.list_images(repositoryName=repo, **kwargs)
        assert len(page["imageIds"]) <= 3
        seen += page["imageIds"]
        if "nextToken" not in page:
            break
        kwargs["nextToken"] = page["nextToken"]
    assert seen == pushed


async def test_describe_images(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    started = time.time()
    image, _ = await push_image(ecr, repo, "v1", layers=[b"a" * 1000, b"b" * 234])
    untagged, _ = await push_image(ecr, repo, None)
    details = (await ecr.describe_images(repositoryName=repo))["imageDetails"]
    assert [d["imageDigest"] for d in details] == [image, untagged]
    detail = details[0]
    assert detail["registryId"] == ACCOUNT_ID and detail["repositoryName"] == repo
    assert detail["imageTags"] == ["v1"]
    assert detail["imageSizeInBytes"] == 1234
    assert started - 1 <= detail["imagePushedAt"].timestamp() <= time.time() + 1
    assert detail["imageManifestMediaType"] == OCI_MANIFEST
    assert detail["artifactMediaType"] == OCI_CONFIG
    assert "imageTags" not in details[1]
    only_tagged = await ecr.describe_images(repositoryName=repo, filter={"tagStatus": "TAGGED"})
    assert [d["imageDigest"] for d in only_tagged["imageDetails"]] == [image]
    by_id = await ecr.describe_images(repositoryName=repo, imageIds=[{"imageTag": "v1"},
                                                                     {"imageDigest": image}])
    assert [d["imageDigest"] for d in by_id["imageDetails"]] == [image]
    page = await ecr.describe_images(repositoryName=repo, maxResults=1)
    assert len(page["imageDetails"]) == 1
    rest = await ecr.describe_images(repositoryName=repo, nextToken=page["nextToken"])
    assert [d["imageDigest"] for d in rest["imageDetails"]] == [untagged]


async def test_index_and_children(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    small, small_text = await push_image(ecr, repo, None, layers=[b"s" * 10])
    big, big_text = await push_image(ecr, repo, None, layers=[b"b" * 500])
    index_text = index_manifest([small_text, big_text])
    put = await ecr.put_image(repositoryName=repo, imageManifest=index_text, imageTag="multi")
    assert put["image"]["imageManifestMediaType"] == OCI_INDEX
    details = await ecr.describe_images(repositoryName=repo, imageIds=[{"imageTag": "multi"}])
    # ImageDetail.imageSizeInBytes: "If the image is a manifest list, this will be the max
    # size of all manifests in the list."
    assert details["imageDetails"][0]["imageSizeInBytes"] == 500
    # A child of an index cannot be deleted while the index needs it.
    blocked = await ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageDigest": small}])
    assert blocked["failures"][0]["failureCode"] == "ImageReferencedByManifestList"
    await ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "multi"}])
    freed = await ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageDigest": small}])
    assert freed["imageIds"] == [{"imageDigest": small}] and freed["failures"] == []
    assert big  # still there
    assert len((await ecr.list_images(repositoryName=repo))["imageIds"]) == 1


async def test_accepted_media_types(ecr: Any, repo: str) -> None:
    """An image in an accepted format is answered as pushed. Asked for by tag in a format it
    was not pushed in, ECR converts Docker schema 2 and OCI image manifests into each other
    (user guide, "Container image manifest format support in Amazon ECR"); by digest it
    converts nothing: the image is not found in the formats asked for."""
    await ecr.create_repository(repositoryName=repo)
    oci, oci_text = await push_image(ecr, repo, "oci")
    wanted = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "oci"}],
                                       acceptedMediaTypes=[OCI_MANIFEST, DOCKER_MANIFEST])
    assert [(i["imageManifest"], i["imageManifestMediaType"]) for i in wanted["images"]] == [
        (oci_text, OCI_MANIFEST)]

    as_docker = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "oci"}],
                                          acceptedMediaTypes=[DOCKER_MANIFEST])
    [image] = as_docker["images"]
    converted = json.loads(image["imageManifest"])
    pushed = json.loads(oci_text)
    assert image["imageManifestMediaType"] == DOCKER_MANIFEST
    assert converted == {
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {**pushed["config"], "mediaType": DOCKER_CONFIG},
        "layers": [{**layer, "mediaType": DOCKER_LAYER} for layer in pushed["layers"]]}
    # What is answered is what its digest names (a client checks one against the other).
    assert image["imageId"] == {"imageDigest": digest(image["imageManifest"]),
                                "imageTag": "oci"}
    assert as_docker["failures"] == []

    refused = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageDigest": oci}],
                                        acceptedMediaTypes=[DOCKER_MANIFEST])
    assert refused["images"] == []
    assert [(f["imageId"], f["failureCode"]) for f in refused["failures"]] == [
        ({"imageDigest": oci}, "ImageNotFound")]

    _, docker_text = await push_image(ecr, repo, "docker", media_type=DOCKER_MANIFEST,
                                      config_type=DOCKER_CONFIG, layer_type=DOCKER_LAYER)
    as_oci = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "docker"}],
                                       acceptedMediaTypes=[OCI_MANIFEST])
    [image] = as_oci["images"]
    pushed = json.loads(docker_text)
    assert (image["imageManifestMediaType"], json.loads(image["imageManifest"])) == (
        OCI_MANIFEST, {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {**pushed["config"], "mediaType": OCI_CONFIG},
                       "layers": [{**layer, "mediaType": "application/vnd.oci.image.layer.v1"
                                                         ".tar+gzip"}
                                  for layer in pushed["layers"]]})
    # No conversion to schema 1 here, none of an artifact or of an index.
    schema1 = "application/vnd.docker.distribution.manifest.v1+json"
    await push_image(ecr, repo, "artifact", artifactType="application/vnd.example+json")
    _, child_text = await push_image(ecr, repo, None)
    await ecr.put_image(repositoryName=repo, imageManifest=index_manifest([child_text]),
                        imageTag="index")
    for tag, accepted in (("docker", [schema1]), ("artifact", [DOCKER_MANIFEST]),
                          ("index", ["application/vnd.docker.distribution.manifest.list.v2"
                                     "+json"])):
        got = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": tag}],
                                        acceptedMediaTypes=accepted)
        assert got["images"] == [], tag
        assert [f["failureCode"] for f in got["failures"]] == ["ImageNotFound"], tag


async def test_batch_get_image_failures(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    image, _ = await push_image(ecr, repo, "v1")
    other, _ = await push_image(ecr, repo, "v2")
    result = await ecr.batch_get_image(repositoryName=repo, imageIds=[
        {"imageTag": "v1"},
        {"imageTag": "nope"},
        {"imageDigest": "sha256:" + "1" * 64},
        {"imageDigest": "sha256:xyz"},
        {"imageTag": "bad tag!"},
        {"imageDigest": other, "imageTag": "v1"},
        {},
    ])
    assert [i["imageId"]["imageDigest"] for i in result["images"]] == [image]
    codes = [f["failureCode"] for f in result["failures"]]
    assert codes == ["ImageNotFound", "ImageNotFound", "InvalidImageDigest", "InvalidImageTag",
                     "ImageTagDoesNotMatchDigest", "MissingDigestAndTag"]


async def test_batch_get_image_answers_every_reference(ecr: Any, repo: str) -> None:
    """A repeated reference is answered again, in the request's order, as BatchDeleteImage
    answers each of its references (a repeat found deleted is a failure of its own)."""
    await ecr.create_repository(repositoryName=repo)
    image, text = await push_image(ecr, repo, "v1")
    got = await ecr.batch_get_image(repositoryName=repo, imageIds=[
        {"imageTag": "v1"}, {"imageDigest": image}, {"imageTag": "v1"}, {"imageTag": "nope"},
        {"imageTag": "nope"}])
    assert [i["imageId"] for i in got["images"]] == [
        {"imageDigest": image, "imageTag": "v1"}, {"imageDigest": image},
        {"imageDigest": image, "imageTag": "v1"}]
    assert [i["imageManifest"] for i in got["images"]] == [text] * 3
    assert [f["imageId"] for f in got["failures"]] == [{"imageTag": "nope"}] * 2
    deleted = await ecr.batch_delete_image(repositoryName=repo, imageIds=[
        {"imageTag": "v1"}, {"imageTag": "v1"}])
    assert deleted["imageIds"] == [{"imageDigest": image, "imageTag": "v1"}]
    assert [f["failureCode"] for f in deleted["failures"]] == ["ImageNotFound"]


async def test_invalid_parameter_messages_are_ecrs(ecr: Any, repo: str) -> None:
    """ECR words a broken constraint "'Member must ...'", and a list of strings is reported
    whole with its item's constraint nested (the answers users quote: 101 imageIds, and
    aws-actions/amazon-ecr-login#225 for registryIds)."""
    await ecr.create_repository(repositoryName=repo)
    with pytest.raises(ecr.exceptions.InvalidParameterException) as too_many:
        await ecr.batch_delete_image(repositoryName=repo,
                                     imageIds=[{"imageTag": f"t{i}"} for i in range(101)])
    assert too_many.value.response["Error"]["Message"] == (
        "Invalid parameter at 'imageIds' failed to satisfy constraint: 'Member must have "
        "length less than or equal to 100'")
    with pytest.raises(ecr.exceptions.InvalidParameterException) as bad_id:
        await ecr.get_authorization_token(registryIds=["123456789012", "12345678901"])
    assert bad_id.value.response["Error"]["Message"] == (
        "Invalid parameter at 'registryIds' failed to satisfy constraint: 'Member must "
        "satisfy constraint: [Member must satisfy regular expression pattern: [0-9]{12}]'")
    # Every constraint of the list's member, whichever broke (as AWS lists them).
    with pytest.raises(ecr.exceptions.InvalidParameterException) as upper:
        await ecr.describe_repositories(repositoryNames=[repo, "Upper"])
    assert upper.value.response["Error"]["Message"].startswith(
        "Invalid parameter at 'repositoryNames' failed to satisfy constraint: 'Member must "
        "satisfy constraint: [Member must have length less than or equal to 256, Member must "
        "have length greater than or equal to 2, Member must satisfy regular expression "
        "pattern: ")
    with pytest.raises(ecr.exceptions.InvalidParameterException) as eleven:
        await ecr.get_authorization_token(registryIds=["123456789012"] * 11)
    assert "'registryIds' failed to satisfy constraint: 'Member must have length less than " \
           "or equal to 10'" in eleven.value.response["Error"]["Message"]


async def test_broken_constraints_are_invalid_parameter_in_every_action(
        shared_emulator: EmulatorProcess, repo: str) -> None:
    """Also where the model declares ValidationException too: ECR answered a lifecycle
    policy text under the model's 100 characters, and a pull through cache rule prefix off
    its pattern, with InvalidParameterException."""
    async with ecr_client(shared_emulator.url, retries={"total_max_attempts": 1},
                          parameter_validation=False) as ecr:
        await _broken_constraints(ecr, repo)


async def _broken_constraints(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    with pytest.raises(ecr.exceptions.InvalidParameterException) as short:
        await ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText="{}")
    assert short.value.response["Error"]["Message"] == (
        "Invalid parameter at 'lifecyclePolicyText' failed to satisfy constraint: 'Member "
        "must have length greater than or equal to 100'")
    assert short.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ecr.exceptions.InvalidParameterException) as prefix:
        await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="Team!",
                                                 upstreamRegistryUrl="public.ecr.aws")
    assert prefix.value.response["Error"]["Message"].startswith(
        "Invalid parameter at 'ecrRepositoryPrefix' failed to satisfy constraint: 'Member "
        "must satisfy regular expression pattern: ")
    with pytest.raises(ecr.exceptions.InvalidParameterException) as referrers:
        await ecr.list_image_referrers(repositoryName=repo,
                                       subjectId={"imageDigest": "sha256:" + "a" * 64},
                                       maxResults=51)
    assert "'maxResults' failed to satisfy constraint: 'Member must have value less than or " \
           "equal to 50'" in referrers.value.response["Error"]["Message"]
    # The first broken constraint in the model's order is named.
    with pytest.raises(ecr.exceptions.InvalidParameterException) as two:
        await ecr.list_images(repositoryName=repo, maxResults=1001, filter={"tagStatus": "ANY"},
                              registryId="1")
    assert two.value.response["Error"]["Message"] == (
        "Invalid parameter at 'registryId' failed to satisfy constraint: 'Member must satisfy "
        "regular expression pattern: [0-9]{12}'")
    with pytest.raises(ecr.exceptions.InvalidParameterException) as name:
        await ecr.create_repository(repositoryName="Team/App")
    assert name.value.response["Error"]["Message"] == (
        "Invalid parameter at 'repositoryName' failed to satisfy constraint: 'must satisfy "
        "regular expression '[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)"
        "[a-z0-9]+)*)*''")


async def test_batch_delete_image(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    image, text = await push_image(ecr, repo, "a")
    await ecr.put_image(repositoryName=repo, imageManifest=text, imageTag="b")
    # By tag: the tag goes, the image stays while it has another tag.
    first = await ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "a"}])
    assert first == {**first, "imageIds": [{"imageDigest": image, "imageTag": "a"}],
                     "failures": []}
    assert (await ecr.list_images(repositoryName=repo))["imageIds"] == [
        {"imageDigest": image, "imageTag": "b"}]
    # Its last tag takes the image with it.
    await ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "b"}])
    assert (await ecr.list_images(repositoryName=repo))["imageIds"] == []
    # By digest: the image and all its tags.
    image, text = await push_image(ecr, repo, "c")
    await ecr.put_image(repositoryName=repo, imageManifest=text, imageTag="d")
    gone = await ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageDigest": image}])
    assert gone["imageIds"] == [{"imageDigest": image, "imageTag": "c"},
                                {"imageDigest": image, "imageTag": "d"}]
    missing = await ecr.batch_delete_image(repositoryName=repo, imageIds=[
        {"imageDigest": image}, {"imageTag": "c"}, {}, {"imageDigest": "md5:zz"}])
    assert [f["failureCode"] for f in missing["failures"]] == [
        "ImageNotFound", "ImageNotFound", "MissingDigestAndTag", "InvalidImageDigest"]


async def test_delete_repository_force(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    await push_image(ecr, repo, "v1")
    await ecr.initiate_layer_upload(repositoryName=repo)
    deleted = await ecr.delete_repository(repositoryName=repo, force=True)
    assert deleted["repository"]["repositoryName"] == repo
    await ecr.create_repository(repositoryName=repo)
    assert (await ecr.list_images(repositoryName=repo))["imageIds"] == []


async def test_list_image_referrers(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    subject, subject_text = await push_image(ecr, repo, "app")
    descriptor = {"mediaType": OCI_MANIFEST, "digest": subject, "size": len(subject_text)}
    sbom, sbom_text = await push_image(
        ecr, repo, None, artifactType="application/spdx+json", subject=descriptor,
        annotations={"org.opencontainers.image.created": "2024-01-01T00:00:00Z"})
    signature, sig_text = await push_image(ecr, repo, None, subject=descriptor,
                                           config=b'{"kind":"signature"}')
    await push_image(ecr, repo, "unrelated")
    result = await ecr.list_image_referrers(repositoryName=repo,
                                            subjectId={"imageDigest": subject})
    assert result["referrers"] == [
        {"digest": sbom, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
         "size": len(sbom_text.encode()), "artifactStatus": "ACTIVE",
         "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}},
        # Without artifactType, the config's media type names the artifact.
        {"digest": signature, "mediaType": OCI_MANIFEST, "artifactType": OCI_CONFIG,
         "size": len(sig_text.encode()), "artifactStatus": "ACTIVE"},
    ]
    filtered = await ecr.list_image_referrers(
        repositoryName=repo, subjectId={"imageDigest": subject},
        filter={"artifactTypes": ["application/spdx+json"]})
    assert [r["digest"] for r in filtered["referrers"]] == [sbom]
    page = await ecr.list_image_referrers(repositoryName=repo,
                                          subjectId={"imageDigest": subject}, maxResults=1)
    assert [r["digest"] for r in page["referrers"]] == [sbom]
    rest = await ecr.list_image_referrers(repositoryName=repo, subjectId={"imageDigest": subject},
                                          maxResults=1, nextToken=page["nextToken"])
    assert [r["digest"] for r in rest["referrers"]] == [signature] and "nextToken" not in rest
    detail = await ecr.describe_images(repositoryName=repo, imageIds=[{"imageDigest": sbom}])
    assert detail["imageDetails"][0]["subjectManifestDigest"] == subject


async def test_get_authorization_token(shared_emulator: EmulatorProcess) -> None:
    async with ecr_client(shared_emulator.url) as ecr:
        data = (await ecr.get_authorization_token())["authorizationData"]
    assert len(data) == 1
    user, _, password = base64.b64decode(data[0]["authorizationToken"]).decode().partition(":")
    assert user == "AWS" and len(password) >= 64
    assert abs(data[0]["expiresAt"].timestamp() - (time.time() + 12 * 3600)) < 60
    assert data[0]["proxyEndpoint"] == shared_emulator.url
    async with ecr_client(shared_emulator.url) as ecr:
        again = (await ecr.get_authorization_token())["authorizationData"][0]
    assert again["authorizationToken"] != data[0]["authorizationToken"]


async def test_download_url_serves_the_layer(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    layer = os.urandom(3 * MiB + 1)
    await push_image(ecr, repo, "v1", layers=[layer])
    answer = await ecr.get_download_url_for_layer(repositoryName=repo, layerDigest=digest(layer))
    assert answer["layerDigest"] == digest(layer)
    assert "X-Amz-Expires=3600" in answer["downloadUrl"]
    async with aiohttp.ClientSession() as session, session.get(answer["downloadUrl"]) as r:
        assert r.status == 200
        assert await r.read() == layer


async def test_immutable_tags_with_exclusions(ecr: Any, repo: str) -> None:
    await ecr.create_repository(
        repositoryName=repo, imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "latest*"}])
    await push_image(ecr, repo, "latest-dev")
    await push_image(ecr, repo, "latest-dev")  # excluded: mutable
    await push_image(ecr, repo, "1.0")
    with pytest.raises(ecr.exceptions.ImageTagAlreadyExistsException):
        await push_image(ecr, repo, "1.0")


async def test_concurrent_uploads_of_one_layer(ecr: Any, repo: str) -> None:
    """Two clients push the same layer at once: one layer results, the second completion is
    told LayerAlreadyExistsException, and the stored bytes are right."""
    await ecr.create_repository(repositoryName=repo)
    data = os.urandom(2 * MiB)

    async def upload() -> str:
        try:
            return await push_layer(ecr, repo, data, part_size=MiB * 2)
        except ecr.exceptions.LayerAlreadyExistsException:
            return "exists"

    outcomes = await asyncio.gather(*(upload() for _ in range(4)))
    assert sorted(outcomes) == sorted([digest(data)] + ["exists"] * 3)
    await push_image(ecr, repo, "v1", layers=[data])
    url = (await ecr.get_download_url_for_layer(repositoryName=repo,
                                                layerDigest=digest(data)))["downloadUrl"]
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        assert await r.read() == data


async def test_request_log(shared_emulator: EmulatorProcess, repo: str) -> None:
    shared_emulator.clear_requests()
    async with ecr_client(shared_emulator.url, access_key_id="AKIDLOGTEST",
                          retries={"total_max_attempts": 1}) as ecr:
        await ecr.create_repository(repositoryName=repo)
        with pytest.raises(ecr.exceptions.RepositoryAlreadyExistsException):
            await ecr.create_repository(repositoryName=repo)
    entries = shared_emulator.requests()
    assert [(e["action"], e["repository"], e["outcome"], e["status"], e["access_key_id"])
            for e in entries] == [
        ("CreateRepository", repo, "ok", 200, "AKIDLOGTEST"),
        ("CreateRepository", repo, "RepositoryAlreadyExistsException", 400, "AKIDLOGTEST"),
    ]
    assert all(e["region"] == REGION and isinstance(e["ts"], float) for e in entries)
    assert [e["action"] for e in shared_emulator.requests("CreateRepository")] == [
        "CreateRepository"] * 2
    shared_emulator.clear_requests()
    assert shared_emulator.requests() == []
    # The file keeps every line (flushed within a second).
    await asyncio.sleep(1.0)
    lines = (shared_emulator.data_dir / "requests.log").read_text().splitlines()
    assert sum(json.loads(line)["repository"] == repo for line in lines) == 2


async def test_unsigned_request_is_refused(shared_emulator: EmulatorProcess) -> None:
    headers = {"X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories",
               "Content-Type": "application/x-amz-json-1.1"}
    async with aiohttp.ClientSession() as session, session.post(
            shared_emulator.url, data=b"{}", headers=headers) as r:
        assert r.status == 403
        body = json.loads(await r.read())
    assert body["__type"] == "MissingAuthenticationTokenException"


async def test_existing_layer_reused_across_images(ecr: Any, repo: str) -> None:
    await ecr.create_repository(repositoryName=repo)
    shared = os.urandom(1000)
    first, _ = await push_image(ecr, repo, "one", layers=[shared])
    assert await ensure_layer(ecr, repo, shared) == digest(shared)
    second, _ = await push_image(ecr, repo, "two", layers=[shared, b"more"])
    assert first != second


@pytest.mark.parametrize("position", [{"a": 1}, "x", [1, 2, 3], -5, [0, 5], 2**63,
                                      [2**64 - 1, ""]],
                         ids=["object", "string", "list", "negative", "pair", "past int64",
                              "pair past int64"])
async def test_a_forged_next_token_is_an_invalid_parameter(ecr: Any, repo: str,
                                                           position: object) -> None:
    """The emulator's tokens are readable (AWS's are sealed): one whose position has another
    shape than the action's, or an offset past what SQLite's INTEGER holds, is
    InvalidParameterException, never a ServerException."""
    await ecr.create_repository(repositoryName=repo)
    calls = {"DescribeRepositories": lambda t: ecr.describe_repositories(nextToken=t),
             "ListImages": lambda t: ecr.list_images(repositoryName=repo, nextToken=t),
             "DescribeImages": lambda t: ecr.describe_images(repositoryName=repo, nextToken=t)}
    for action, call in calls.items():
        token = base64.urlsafe_b64encode(orjson.dumps([action, position])).decode()
        with pytest.raises(ecr.exceptions.InvalidParameterException):
            await call(token)
