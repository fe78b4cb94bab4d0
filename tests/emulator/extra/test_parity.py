"""Every exception of ECR's policy, lifecycle and tag actions and of all 23 ECR Public actions,
each raised by a named trigger, as tests/emulator/api/test_errors.py does for ECR's
core actions.

``NATURAL`` makes the emulator raise an exception the way a client meets it; ``RAW`` sends
bytes no SDK would send; ``INJECTED`` covers what cannot arise in an emulator (internal
failures) or cannot arise at all (each with the reason), through the fault injector. The
last tests check that these tables cover every error botocore's models declare for these
actions, and every error the ECR Public API reference (source document 002) states, as
transcribed in tests/data/aws_reference.json with the line of each action's heading and of
each error (the tests read nothing outside the repository).
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import pytest_asyncio
from botocore.exceptions import ClientError

from ecr_emulator import actions, public
from ecr_emulator.protocol import ACTIONS, PUBLIC_ACTIONS
from tests.emulator.api import triggers
from tests.emulator.api.helpers import (
    digest,
    image_manifest,
    index_manifest,
)
from tests.emulator.extra.helpers import (
    keep_last,
    lifecycle,
    policy,
    public_client,
    raw_call,
)
from tests.support.emulator import ACCOUNT_ID, REGION, EmulatorProcess, ecr_client

module_loop = pytest.mark.asyncio(loop_scope="module")  # for the module-scoped clients
ENV = {"ECR_EMULATOR_MAX_PARTS": "3", "ECR_EMULATOR_PUBLIC_MAX_PARTS": "3",
       "ECR_EMULATOR_MAX_IMAGES_PER_REPOSITORY": "3",
       "ECR_EMULATOR_LIFECYCLE_PREVIEW_SECONDS": "60", "ECR_EMULATOR_LIFECYCLE_INTERVAL": "0"}
MISSING = "sha256:" + "0" * 64
UPLOAD = str(uuid.UUID(int=0))
ECR_OWN = ("SetRepositoryPolicy", "GetRepositoryPolicy", "DeleteRepositoryPolicy",
           "PutLifecyclePolicy", "GetLifecyclePolicy", "DeleteLifecyclePolicy",
           "StartLifecyclePolicyPreview", "GetLifecyclePolicyPreview",
           "ListTagsForResource", "TagResource", "UntagResource")
KEEP_TWO = lifecycle(keep_last(2))


@dataclass
class Ctx:
    ecr: Any   # ECR, no retries
    raw: Any   # ECR, no client-side validation either
    pub: Any   # ECR Public
    praw: Any  # ECR Public, no client-side validation
    emulator: EmulatorProcess
    repo: str

    async def create(self) -> str:
        await self.ecr.create_repository(repositoryName=self.repo)
        return self.repo

    async def pcreate(self) -> str:
        await self.pub.create_repository(repositoryName=self.repo)
        return self.repo

    @property
    def nowhere(self) -> str:
        return self.repo + "-missing"

    def arn(self, name: str | None = None) -> str:
        return f"arn:aws:ecr:{REGION}:{ACCOUNT_ID}:repository/{name or self.repo}"

    def parn(self, name: str | None = None) -> str:
        return f"arn:aws:ecr-public::{ACCOUNT_ID}:repository/{name or self.repo}"


Trigger = Callable[[Ctx], Awaitable[Any]]


# ECR: repository policies, lifecycle policies, resource tags


async def preview_twice(c: Ctx) -> Any:
    await c.create()
    await c.ecr.start_lifecycle_policy_preview(repositoryName=c.repo,
                                               lifecyclePolicyText=KEEP_TWO)
    return await c.ecr.start_lifecycle_policy_preview(repositoryName=c.repo,
                                                      lifecyclePolicyText=KEEP_TWO)


async def preview_without_policy(c: Ctx) -> Any:
    await c.create()
    return await c.ecr.start_lifecycle_policy_preview(repositoryName=c.repo)


async def tags_over_the_limit(c: Ctx, client: Any, arn: str) -> Any:
    await client.tag_resource(resourceArn=arn,
                              tags=[{"Key": f"k{i}", "Value": "v"} for i in range(30)])
    return await client.tag_resource(resourceArn=arn, tags=[{"Key": f"j{i}", "Value": "v"}
                                                            for i in range(21)])


R, IPE, VE = "RepositoryNotFoundException", "InvalidParameterException", "ValidationException"
BAD_RULES = json.dumps({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "tagged"},
                                   "action": {"type": "expire"}}]})

ECR_NATURAL: list[tuple[str, str, str, Trigger]] = [
    ("SetRepositoryPolicy", R, "an unknown repository",
     lambda c: c.ecr.set_repository_policy(repositoryName=c.nowhere, policyText="{}")),
    ("SetRepositoryPolicy", IPE, "policy text that is not JSON",
     lambda c: _then(c.create(), c.ecr.set_repository_policy, repositoryName=c.repo,
                     policyText="{not json")),
    ("GetRepositoryPolicy", R, "an unknown repository",
     lambda c: c.ecr.get_repository_policy(repositoryName=c.nowhere)),
    ("GetRepositoryPolicy", "RepositoryPolicyNotFoundException", "no policy set",
     lambda c: _then(c.create(), c.ecr.get_repository_policy, repositoryName=c.repo)),
    ("GetRepositoryPolicy", IPE, "an upper-case repository name",
     lambda c: c.raw.get_repository_policy(repositoryName="Upper")),
    ("DeleteRepositoryPolicy", R, "an unknown repository",
     lambda c: c.ecr.delete_repository_policy(repositoryName=c.nowhere)),
    ("DeleteRepositoryPolicy", "RepositoryPolicyNotFoundException", "no policy set",
     lambda c: _then(c.create(), c.ecr.delete_repository_policy, repositoryName=c.repo)),
    ("DeleteRepositoryPolicy", IPE, "an upper-case repository name",
     lambda c: c.raw.delete_repository_policy(repositoryName="Upper")),
    ("PutLifecyclePolicy", R, "an unknown repository",
     lambda c: c.ecr.put_lifecycle_policy(repositoryName=c.nowhere,
                                          lifecyclePolicyText=KEEP_TWO)),
    ("PutLifecyclePolicy", IPE, "a tagged rule without prefixes or patterns",
     lambda c: _then(c.create(), c.ecr.put_lifecycle_policy, repositoryName=c.repo,
                     lifecyclePolicyText=BAD_RULES + " " * 20)),
    ("PutLifecyclePolicy", IPE, "a policy text under the model's 100 characters",
     lambda c: c.raw.put_lifecycle_policy(repositoryName="a1", lifecyclePolicyText="{}")),
    ("GetLifecyclePolicy", R, "an unknown repository",
     lambda c: c.ecr.get_lifecycle_policy(repositoryName=c.nowhere)),
    ("GetLifecyclePolicy", "LifecyclePolicyNotFoundException", "no policy set",
     lambda c: _then(c.create(), c.ecr.get_lifecycle_policy, repositoryName=c.repo)),
    ("GetLifecyclePolicy", IPE, "an upper-case repository name",
     lambda c: c.raw.get_lifecycle_policy(repositoryName="Upper")),
    ("DeleteLifecyclePolicy", R, "an unknown repository",
     lambda c: c.ecr.delete_lifecycle_policy(repositoryName=c.nowhere)),
    ("DeleteLifecyclePolicy", "LifecyclePolicyNotFoundException", "no policy set",
     lambda c: _then(c.create(), c.ecr.delete_lifecycle_policy, repositoryName=c.repo)),
    ("DeleteLifecyclePolicy", IPE, "an upper-case repository name",
     lambda c: c.raw.delete_lifecycle_policy(repositoryName="Upper")),
    ("StartLifecyclePolicyPreview", R, "an unknown repository",
     lambda c: c.ecr.start_lifecycle_policy_preview(repositoryName=c.nowhere)),
    ("StartLifecyclePolicyPreview", IPE, "invalid rules",
     lambda c: _then(c.create(), c.ecr.start_lifecycle_policy_preview, repositoryName=c.repo,
                     lifecyclePolicyText=BAD_RULES + " " * 20)),
    ("StartLifecyclePolicyPreview", "LifecyclePolicyNotFoundException",
     "no text given and no policy set", preview_without_policy),
    ("StartLifecyclePolicyPreview", "LifecyclePolicyPreviewInProgressException",
     "a second preview while the first runs (ECR_EMULATOR_LIFECYCLE_PREVIEW_SECONDS=60)",
     preview_twice),
    ("StartLifecyclePolicyPreview", IPE, "a policy text under 100 characters",
     lambda c: c.raw.start_lifecycle_policy_preview(repositoryName="a1",
                                                    lifecyclePolicyText="{}")),
    ("GetLifecyclePolicyPreview", R, "an unknown repository",
     lambda c: c.ecr.get_lifecycle_policy_preview(repositoryName=c.nowhere)),
    ("GetLifecyclePolicyPreview", "LifecyclePolicyPreviewNotFoundException", "none started",
     lambda c: _then(c.create(), c.ecr.get_lifecycle_policy_preview, repositoryName=c.repo)),
    ("GetLifecyclePolicyPreview", IPE, "a made-up nextToken",
     lambda c: c.ecr.get_lifecycle_policy_preview(repositoryName="a1", nextToken="garbage")),
    ("GetLifecyclePolicyPreview", IPE, "maxResults 101 (the model allows 100)",
     lambda c: c.ecr.get_lifecycle_policy_preview(repositoryName="a1", maxResults=101)),
    ("ListTagsForResource", IPE, "an ARN of another service",
     lambda c: c.ecr.list_tags_for_resource(resourceArn=c.parn())),
    ("ListTagsForResource", R, "the ARN of no repository",
     lambda c: c.ecr.list_tags_for_resource(resourceArn=c.arn(c.nowhere))),
    ("TagResource", IPE, "not an ARN",
     lambda c: c.ecr.tag_resource(resourceArn="repo", tags=[{"Key": "a", "Value": "b"}])),
    ("TagResource", R, "the ARN of no repository",
     lambda c: c.ecr.tag_resource(resourceArn=c.arn(c.nowhere), tags=[])),
    ("TagResource", "InvalidTagParameterException", "a key starting with aws:",
     lambda c: _then(c.create(), c.ecr.tag_resource, resourceArn=c.arn(),
                     tags=[{"Key": "aws:x", "Value": "v"}])),
    ("TagResource", "TooManyTagsException", "30 tags, then 21 more",
     lambda c: _then(c.create(), tags_over_the_limit, c, c.ecr, c.arn())),
    ("UntagResource", IPE, "not an ARN",
     lambda c: c.ecr.untag_resource(resourceArn="repo", tagKeys=["a"])),
    ("UntagResource", R, "the ARN of no repository",
     lambda c: c.ecr.untag_resource(resourceArn=c.arn(c.nowhere), tagKeys=["a"])),
    ("UntagResource", "InvalidTagParameterException", "a key starting with aws:",
     lambda c: _then(c.create(), c.ecr.untag_resource, resourceArn=c.arn(),
                     tagKeys=["aws:x"])),
]


async def _then(first: Awaitable[Any], method: Callable[..., Awaitable[Any]], *args: Any,
                **kwargs: Any) -> Any:
    await first
    return await method(*args, **kwargs)


# ECR Public


OTHER = "999999999999"
P_NATURAL: list[tuple[str, str, str, Trigger]] = [
    ("BatchCheckLayerAvailability", IPE, "101 digests",
     lambda c: c.pub.batch_check_layer_availability(repositoryName="a1",
                                                    layerDigests=[MISSING] * 101)),
    ("BatchCheckLayerAvailability", "RegistryNotFoundException", "another registry",
     lambda c: c.pub.batch_check_layer_availability(repositoryName="a1", registryId=OTHER,
                                                    layerDigests=[MISSING])),
    ("BatchCheckLayerAvailability", R, "an unknown repository",
     lambda c: c.pub.batch_check_layer_availability(repositoryName=c.nowhere,
                                                    layerDigests=[MISSING])),
    ("BatchDeleteImage", IPE, "an empty imageIds list",
     lambda c: c.praw.batch_delete_image(repositoryName="a1", imageIds=[])),
    ("BatchDeleteImage", R, "an unknown repository",
     lambda c: c.pub.batch_delete_image(repositoryName=c.nowhere, imageIds=[{"imageTag": "a"}])),
    ("CompleteLayerUpload", "EmptyUploadException", "no part uploaded",
     lambda c: triggers.empty_upload(c.pub, c.repo)),
    ("CompleteLayerUpload", "InvalidLayerException", "digest of other bytes",
     lambda c: triggers.complete(c.pub, c.repo, b"abc", [digest(b"abd")])),
    ("CompleteLayerUpload", IPE, "two digests",
     lambda c: triggers.complete(c.pub, c.repo, b"abc", [digest(b"abc")] * 2)),
    ("CompleteLayerUpload", "LayerAlreadyExistsException", "the same layer twice",
     lambda c: triggers.layer_twice(c.pub, c.repo)),
    ("CompleteLayerUpload", "LayerPartTooSmallException", "a 1 MiB part before the last",
     lambda c: triggers.two_parts_first_small(c.pub, c.repo)),
    ("CompleteLayerUpload", "RegistryNotFoundException", "another registry",
     lambda c: c.pub.complete_layer_upload(repositoryName="a1", registryId=OTHER,
                                           uploadId=UPLOAD, layerDigests=[MISSING])),
    ("CompleteLayerUpload", R, "an unknown repository",
     lambda c: c.pub.complete_layer_upload(repositoryName=c.nowhere, uploadId=UPLOAD,
                                           layerDigests=[MISSING])),
    ("CompleteLayerUpload", "UploadNotFoundException", "an upload never started",
     lambda c: _then(c.pcreate(), c.pub.complete_layer_upload, repositoryName=c.repo,
                     uploadId=UPLOAD, layerDigests=[MISSING])),
    ("CreateRepository", IPE, "an upper-case name",
     lambda c: c.pub.create_repository(repositoryName="Team/App")),
    ("CreateRepository", "InvalidTagParameterException", "a key starting with aws:",
     lambda c: c.pub.create_repository(repositoryName=c.repo,
                                       tags=[{"Key": "aws:x", "Value": "v"}])),
    ("CreateRepository", "RepositoryAlreadyExistsException", "the same name twice",
     lambda c: triggers.create_twice(c.pub, c.repo)),
    ("CreateRepository", "TooManyTagsException", "51 tags",
     lambda c: c.pub.create_repository(repositoryName=c.repo, tags=[
         {"Key": f"k{i}", "Value": "v"} for i in range(51)])),
    ("DeleteRepository", IPE, "an upper-case name",
     lambda c: c.pub.delete_repository(repositoryName="Upper")),
    ("DeleteRepository", "RepositoryNotEmptyException", "an image left, no force",
     lambda c: triggers.repository_with_image(c.pub, c.repo)),
    ("DeleteRepository", R, "an unknown repository",
     lambda c: c.pub.delete_repository(repositoryName=c.nowhere)),
    ("DeleteRepositoryPolicy", IPE, "an upper-case name",
     lambda c: c.pub.delete_repository_policy(repositoryName="Upper")),
    ("DeleteRepositoryPolicy", R, "an unknown repository",
     lambda c: c.pub.delete_repository_policy(repositoryName=c.nowhere)),
    ("DeleteRepositoryPolicy", "RepositoryPolicyNotFoundException", "no policy set",
     lambda c: _then(c.pcreate(), c.pub.delete_repository_policy, repositoryName=c.repo)),
    ("DescribeImages", "ImageNotFoundException", "an unknown tag",
     lambda c: _then(c.pcreate(), c.pub.describe_images, repositoryName=c.repo,
                     imageIds=[{"imageTag": "no"}])),
    ("DescribeImages", IPE, "imageIds with maxResults",
     lambda c: c.pub.describe_images(repositoryName="a1", imageIds=[{"imageTag": "a"}],
                                     maxResults=2)),
    ("DescribeImages", R, "an unknown repository",
     lambda c: c.pub.describe_images(repositoryName=c.nowhere)),
    ("DescribeImageTags", IPE, "maxResults 1001",
     lambda c: c.pub.describe_image_tags(repositoryName="a1", maxResults=1001)),
    ("DescribeImageTags", R, "an unknown repository",
     lambda c: c.pub.describe_image_tags(repositoryName=c.nowhere)),
    ("DescribeRegistries", IPE, "a made-up nextToken",
     lambda c: c.pub.describe_registries(nextToken="garbage")),
    ("DescribeRepositories", IPE, "maxResults 1001",
     lambda c: c.pub.describe_repositories(maxResults=1001)),
    ("DescribeRepositories", R, "an unknown name",
     lambda c: c.pub.describe_repositories(repositoryNames=[c.nowhere])),
    ("GetRepositoryCatalogData", IPE, "an upper-case name",
     lambda c: c.pub.get_repository_catalog_data(repositoryName="Upper")),
    ("GetRepositoryCatalogData", R, "an unknown repository",
     lambda c: c.pub.get_repository_catalog_data(repositoryName=c.nowhere)),
    ("GetRepositoryPolicy", IPE, "an upper-case name",
     lambda c: c.pub.get_repository_policy(repositoryName="Upper")),
    ("GetRepositoryPolicy", R, "an unknown repository",
     lambda c: c.pub.get_repository_policy(repositoryName=c.nowhere)),
    ("GetRepositoryPolicy", "RepositoryPolicyNotFoundException", "no policy set",
     lambda c: _then(c.pcreate(), c.pub.get_repository_policy, repositoryName=c.repo)),
    ("InitiateLayerUpload", IPE, "an upper-case name",
     lambda c: c.pub.initiate_layer_upload(repositoryName="Upper")),
    ("InitiateLayerUpload", "RegistryNotFoundException", "another registry",
     lambda c: c.pub.initiate_layer_upload(repositoryName="a1", registryId=OTHER)),
    ("InitiateLayerUpload", R, "an unknown repository",
     lambda c: c.pub.initiate_layer_upload(repositoryName=c.nowhere)),
    ("ListTagsForResource", IPE, "a private repository's ARN",
     lambda c: c.pub.list_tags_for_resource(resourceArn=c.arn())),
    ("ListTagsForResource", R, "the ARN of no repository",
     lambda c: c.pub.list_tags_for_resource(resourceArn=c.parn(c.nowhere))),
    ("PutImage", "ImageAlreadyExistsException", "same manifest and tag again",
     lambda c: triggers.same_image_twice(c.pub, c.repo)),
    ("PutImage", "ImageDigestDoesNotMatchException", "imageDigest of another manifest",
     lambda c: triggers.wrong_image_digest(c.pub, c.repo)),
    ("PutImage", IPE, "a tag outside the grammar",
     lambda c: c.pub.put_image(repositoryName="a1", imageManifest="{}", imageTag="bad tag")),
    ("PutImage", "LayersNotFoundException", "a layer never uploaded",
     lambda c: _then(c.pcreate(), c.pub.put_image, repositoryName=c.repo,
                     imageManifest=image_manifest(b"{}", [b"never uploaded"]))),
    ("PutImage", "LimitExceededException", "a fourth image (limit set to 3)",
     lambda c: triggers.too_many_images(c.pub, c.repo)),
    ("PutImage", "ReferencedImagesNotFoundException", "an index of unknown manifests",
     lambda c: _then(c.pcreate(), c.pub.put_image, repositoryName=c.repo,
                     imageManifest=index_manifest(['{"not":"pushed"}']))),
    ("PutImage", "RegistryNotFoundException", "another registry",
     lambda c: c.pub.put_image(repositoryName="a1", registryId=OTHER, imageManifest="{}")),
    ("PutImage", R, "an unknown repository",
     lambda c: c.pub.put_image(repositoryName=c.nowhere, imageManifest="{}")),
    ("PutRegistryCatalogData", IPE, "a display name of 101 characters",
     lambda c: c.praw.put_registry_catalog_data(displayName="x" * 101)),
    ("PutRepositoryCatalogData", IPE, "a description of 1025 characters",
     lambda c: c.praw.put_repository_catalog_data(repositoryName="a1",
                                                  catalogData={"description": "x" * 1025})),
    ("PutRepositoryCatalogData", R, "an unknown repository",
     lambda c: c.pub.put_repository_catalog_data(repositoryName=c.nowhere, catalogData={})),
    ("SetRepositoryPolicy", IPE, "an ecr: action in an ECR Public policy",
     lambda c: _then(c.pcreate(), c.pub.set_repository_policy, repositoryName=c.repo,
                     policyText=policy({"Effect": "Allow", "Principal": "*",
                                        "Action": "ecr:*"}))),
    ("SetRepositoryPolicy", R, "an unknown repository",
     lambda c: c.pub.set_repository_policy(repositoryName=c.nowhere, policyText="{}")),
    ("TagResource", IPE, "not an ARN",
     lambda c: c.pub.tag_resource(resourceArn="repo", tags=[])),
    ("TagResource", "InvalidTagParameterException", "a key starting with aws:",
     lambda c: _then(c.pcreate(), c.pub.tag_resource, resourceArn=c.parn(),
                     tags=[{"Key": "aws:x", "Value": "v"}])),
    ("TagResource", R, "the ARN of no repository",
     lambda c: c.pub.tag_resource(resourceArn=c.parn(c.nowhere), tags=[])),
    ("TagResource", "TooManyTagsException", "30 tags, then 21 more",
     lambda c: _then(c.pcreate(), tags_over_the_limit, c, c.pub, c.parn())),
    ("UntagResource", IPE, "not an ARN",
     lambda c: c.pub.untag_resource(resourceArn="repo", tagKeys=[])),
    ("UntagResource", "InvalidTagParameterException", "a key starting with aws:",
     lambda c: _then(c.pcreate(), c.pub.untag_resource, resourceArn=c.parn(),
                     tagKeys=["aws:x"])),
    ("UntagResource", R, "the ARN of no repository",
     lambda c: c.pub.untag_resource(resourceArn=c.parn(c.nowhere), tagKeys=[])),
    ("UploadLayerPart", "InvalidLayerPartException", "first byte does not follow",
     lambda c: triggers.part_out_of_order(c.pub, c.repo)),
    ("UploadLayerPart", IPE, "an uploadId that is not a UUID",
     lambda c: c.pub.upload_layer_part(repositoryName="a1", uploadId="nope", partFirstByte=0,
                                       partLastByte=0, layerPartBlob=b"x")),
    ("UploadLayerPart", "LimitExceededException", "a fourth part (limit set to 3)",
     lambda c: triggers.too_many_parts(c.pub, c.repo)),
    ("UploadLayerPart", "RegistryNotFoundException", "another registry",
     lambda c: c.pub.upload_layer_part(repositoryName="a1", registryId=OTHER, uploadId=UPLOAD,
                                       partFirstByte=0, partLastByte=0, layerPartBlob=b"x")),
    ("UploadLayerPart", R, "an unknown repository",
     lambda c: c.pub.upload_layer_part(repositoryName=c.nowhere, uploadId=UPLOAD,
                                       partFirstByte=0, partLastByte=0, layerPartBlob=b"x")),
    ("UploadLayerPart", "UploadNotFoundException", "an upload never started",
     lambda c: _then(c.pcreate(), c.pub.upload_layer_part, repositoryName=c.repo,
                     uploadId=UPLOAD, partFirstByte=0, partLastByte=0, layerPartBlob=b"x")),
]

# Bytes no SDK would send: (service, action, exception, body).
RAW: list[tuple[str, str, str, bytes]] = [
    # A body that is not an object is unreadable, not an invalid parameter.
    ("ecr-public", "GetAuthorizationToken", "SerializationException", b"[1, 2]"),
]
# Only reachable with a repository limit of 1: (service, action, exception).
TINY = [("ecr-public", "CreateRepository", "LimitExceededException")]

# Faults that cannot arise in an emulator, or cannot arise at all.
NEVER = {
    **{("ecr", action, VE): "declared, but ECR answers a broken constraint of the model with "
       "InvalidParameterException (validation.constraint_error) and these actions check "
       "nothing else that way" for action in (
           "PutLifecyclePolicy", "GetLifecyclePolicy", "DeleteLifecyclePolicy",
           "StartLifecyclePolicyPreview", "GetLifecyclePolicyPreview")},
    ("ecr", "UntagResource", "TooManyTagsException"): "removing tags cannot exceed a limit",
    ("ecr-public", "UntagResource", "TooManyTagsException"): "as for ECR",
    ("ecr-public", "PutImage", "ImageTagAlreadyExistsException"):
        "ECR Public tags are always mutable",
    ("ecr-public", "GetAuthorizationToken", IPE): "the action has no input members: every "
        "body it cannot read is a SerializationException, so no parameter can be invalid",
    ("ecr-public", "GetRepositoryCatalogData", "RepositoryCatalogDataNotFoundException"):
        "only in the model: a repository created without catalog data reads as {} on AWS "
        "(Terraform's aws_ecrpublic_repository reads it after every create), and when AWS "
        "raises it is not published",
}

# Valid input per ECR Public action: an injected fault (or a foreign region) strikes after
# validation.
P_VALID: dict[str, dict[str, Any]] = {
    "BatchCheckLayerAvailability": {"repositoryName": "a1", "layerDigests": [MISSING]},
    "BatchDeleteImage": {"repositoryName": "a1", "imageIds": [{"imageTag": "a"}]},
    "CompleteLayerUpload": {"repositoryName": "a1", "uploadId": UPLOAD,
                            "layerDigests": [MISSING]},
    "CreateRepository": {"repositoryName": "a1"},
    "DeleteRepository": {"repositoryName": "a1"},
    "DeleteRepositoryPolicy": {"repositoryName": "a1"},
    "DescribeImages": {"repositoryName": "a1"},
    "DescribeImageTags": {"repositoryName": "a1"},
    "DescribeRegistries": {},
    "DescribeRepositories": {},
    "GetAuthorizationToken": {},
    "GetRegistryCatalogData": {},
    "GetRepositoryCatalogData": {"repositoryName": "a1"},
    "GetRepositoryPolicy": {"repositoryName": "a1"},
    "InitiateLayerUpload": {"repositoryName": "a1"},
    "ListTagsForResource": {"resourceArn": f"arn:aws:ecr-public::{ACCOUNT_ID}:repository/a1"},
    "PutImage": {"repositoryName": "a1", "imageManifest": "{}"},
    "PutRegistryCatalogData": {},
    "PutRepositoryCatalogData": {"repositoryName": "a1", "catalogData": {}},
    "SetRepositoryPolicy": {"repositoryName": "a1", "policyText": "{}"},
    "TagResource": {"resourceArn": f"arn:aws:ecr-public::{ACCOUNT_ID}:repository/a1",
                    "tags": []},
    "UntagResource": {"resourceArn": f"arn:aws:ecr-public::{ACCOUNT_ID}:repository/a1",
                      "tagKeys": []},
    "UploadLayerPart": {"repositoryName": "a1", "uploadId": UPLOAD, "partFirstByte": 0,
                        "partLastByte": 0, "layerPartBlob": b"x"},
}
E_VALID: dict[str, dict[str, Any]] = {
    "SetRepositoryPolicy": {"repositoryName": "a1", "policyText": "{}"},
    "GetRepositoryPolicy": {"repositoryName": "a1"},
    "DeleteRepositoryPolicy": {"repositoryName": "a1"},
    "PutLifecyclePolicy": {"repositoryName": "a1", "lifecyclePolicyText": KEEP_TWO},
    "GetLifecyclePolicy": {"repositoryName": "a1"},
    "DeleteLifecyclePolicy": {"repositoryName": "a1"},
    "StartLifecyclePolicyPreview": {"repositoryName": "a1"},
    "GetLifecyclePolicyPreview": {"repositoryName": "a1"},
    "ListTagsForResource": {"resourceArn": f"arn:aws:ecr:{REGION}:{ACCOUNT_ID}:repository/a1"},
    "TagResource": {"resourceArn": f"arn:aws:ecr:{REGION}:{ACCOUNT_ID}:repository/a1",
                    "tags": []},
    "UntagResource": {"resourceArn": f"arn:aws:ecr:{REGION}:{ACCOUNT_ID}:repository/a1",
                      "tagKeys": []},
}

# The ECR Public API reference (source document 002) and the ECR API list (001), as
# transcribed into tests/data/aws_reference.json with the line of each fact.
REFERENCE = json.loads((Path(__file__).resolve().parents[2] / "data" / "aws_reference.json")
                       .read_text())
# action → (line of its heading, the errors its "Errors" section states)
DOCUMENTED: dict[str, tuple[int, set[str]]] = {
    entry["action"]: (entry["line"], {error["name"] for error in entry["errors"]})
    for entry in REFERENCE["ecr_public_actions"]["actions"]}


@functools.cache
def declared(service: str) -> dict[str, set[str]]:
    assert actions and public  # imported to register the handlers
    model = botocore.session.get_session().get_service_model(service)
    names = ECR_OWN if service == "ecr" else tuple(PUBLIC_ACTIONS)
    return {name: {e.name for e in model.operation_model(name).error_shapes} for name in names}


def injected() -> list[tuple[str, str, str]]:
    """ServerException of every action, and what NEVER lists."""
    rows = [(service, action, "ServerException") for service in ("ecr", "ecr-public")
            for action in declared(service)]
    return sorted(rows + list(NEVER))


@pytest.fixture(scope="module")
def parity_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with EmulatorProcess(tmp_path_factory.mktemp("parity"), env=ENV) as emu:
        yield emu


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def clients(parity_emulator: EmulatorProcess) -> AsyncIterator[tuple[Any, ...]]:
    """The four clients, made once (a client costs some 50 ms)."""
    url, once = parity_emulator.url, {"total_max_attempts": 1}
    async with ecr_client(url, retries=once) as ecr, \
            ecr_client(url, retries=once, parameter_validation=False) as raw, \
            public_client(url) as pub, public_client(url, parameter_validation=False) as praw, \
            public_client(url, region="us-west-2") as west:
        yield ecr, raw, pub, praw, west


@pytest.fixture
def ctx(clients: tuple[Any, ...], parity_emulator: EmulatorProcess) -> Ctx:
    return Ctx(*clients[:4], parity_emulator, f"par/{uuid.uuid4().hex[:10]}")


@module_loop
@pytest.mark.parametrize(("action", "exception", "trigger"), [
    pytest.param(a, e, t, id=f"ecr-{a}-{e}-{why}") for a, e, why, t in ECR_NATURAL])
async def test_ecr_natural(ctx: Ctx, action: str, exception: str, trigger: Trigger) -> None:
    with pytest.raises(ClientError) as info:
        await trigger(ctx)
    triggers.assert_raised([ctx.ecr], info, action, exception)


@module_loop
@pytest.mark.parametrize(("action", "exception", "trigger"), [
    pytest.param(a, e, t, id=f"public-{a}-{e}-{why}") for a, e, why, t in P_NATURAL])
async def test_public_natural(ctx: Ctx, action: str, exception: str, trigger: Trigger) -> None:
    with pytest.raises(ClientError) as info:
        await trigger(ctx)
    triggers.assert_raised([ctx.pub], info, action, exception)


@module_loop
@pytest.mark.parametrize("action", sorted(P_VALID))
async def test_public_outside_us_east_1(clients: tuple[Any, ...], action: str) -> None:
    """Every ECR Public action declares UnsupportedCommandException: "The action isn't
    supported in this Region." A client of another region meets it."""
    west = clients[4]
    with pytest.raises(ClientError) as info:
        await getattr(west, triggers.snake(action))(**P_VALID[action])
    triggers.assert_raised([west], info, action, "UnsupportedCommandException")


@pytest.mark.parametrize(("service", "action", "exception", "body"), RAW)
async def test_raw(parity_emulator: EmulatorProcess, service: str, action: str,
                   exception: str, body: bytes) -> None:
    prefix = "SpencerFrontendService" if service == "ecr-public" else \
        "AmazonEC2ContainerRegistry_V20150921"
    status, answer = await raw_call(parity_emulator.url, f"{prefix}.{action}", body)
    assert (status, answer["__type"]) == (400, exception)


async def test_tiny_limits(tmp_path: Path) -> None:
    with EmulatorProcess(tmp_path / "tiny", env={"ECR_EMULATOR_MAX_REPOSITORIES": "1"}) as emu:
        async with public_client(emu.url) as pub:
            await pub.create_repository(repositoryName="only")
            with pytest.raises(ClientError) as info:
                await pub.create_repository(repositoryName="second")
            triggers.assert_raised([pub], info, "CreateRepository", "LimitExceededException")


@module_loop
@pytest.mark.parametrize(("service", "action", "exception"), [
    pytest.param(s, a, e, id=f"{s}-{a}-{e}") for s, a, e in injected()])
async def test_injected(ctx: Ctx, service: str, action: str, exception: str) -> None:
    qualified = action if service == "ecr" else f"ecr-public:{action}"
    ctx.emulator.inject_fault(qualified, exception)
    client = ctx.ecr if service == "ecr" else ctx.pub
    valid = E_VALID if service == "ecr" else P_VALID
    with pytest.raises(ClientError) as info:
        await getattr(client, triggers.snake(action))(**valid[action])
    triggers.assert_raised([client], info, action, exception)


def covered() -> set[tuple[str, str, str]]:
    rows = {("ecr", a, e) for a, e, _, _ in ECR_NATURAL}
    rows |= {("ecr-public", a, e) for a, e, _, _ in P_NATURAL}
    rows |= {("ecr-public", a, "UnsupportedCommandException") for a in P_VALID}
    rows |= {(s, a, e) for s, a, e, _ in RAW} | set(TINY) | set(injected())
    return rows


def test_every_declared_error_is_covered() -> None:
    wanted = {(service, action, error) for service in ("ecr", "ecr-public")
              for action, errors in declared(service).items() for error in errors}
    missing = wanted - covered()
    assert not missing, f"no trigger for {sorted(missing)}"


def test_every_documented_error_is_covered() -> None:
    missing = {(action, error) for action, (_, errors) in DOCUMENTED.items()
               for error in errors} - {(a, e) for s, a, e in covered() if s == "ecr-public"}
    assert not missing, missing


def test_every_action_of_the_sources_is_implemented() -> None:
    """The 23 actions of ECR Public's reference, and the 22 of the ECR API list (001)."""
    assert set(PUBLIC_ACTIONS) == set(DOCUMENTED) == set(P_VALID)
    listed = {entry["action"] for entry in REFERENCE["ecr_actions"]["actions"]}
    assert len(listed) == 22 and listed <= set(ACTIONS)
    assert set(ECR_OWN) <= set(ACTIONS) and set(E_VALID) == set(ECR_OWN)


def test_the_transcribed_reference_is_consistent() -> None:
    """Each action's errors lie within its own section, after its "Errors" heading, in the
    order of the document; every name is an error botocore's model knows for ECR Public."""
    actions = REFERENCE["ecr_public_actions"]["actions"]
    lines = [entry["line"] for entry in actions]
    assert lines == sorted(lines) and len(set(lines)) == len(lines) == 23
    ends = [*lines[1:], float("inf")]
    for entry, end in zip(actions, ends, strict=True):
        assert entry["line"] < entry["errors_line"] < end, entry["action"]
        error_lines = [error["line"] for error in entry["errors"]]
        assert error_lines == sorted(error_lines), entry["action"]
        assert all(entry["errors_line"] < line < end for line in error_lines), entry["action"]
    assert set().union(*(errors for _, errors in DOCUMENTED.values())) <= covered_names()
    ecr = [entry["line"] for entry in REFERENCE["ecr_actions"]["actions"]]
    assert ecr == sorted(ecr) and len(ecr) == 22


def covered_names() -> set[str]:
    return {e for errors in declared("ecr-public").values() for e in errors}
