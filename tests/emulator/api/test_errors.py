"""Every exception the implemented actions declare, each raised by a named trigger.

``NATURAL`` lists, per (action, exception), a scenario that makes the emulator raise it, the
way a client would meet it. Exceptions of features the emulator does not have (KMS,
internal failures) and upstream failures are raised by the fault injector instead
(``INJECTED``), which proves only that clients see them in the modelled shape. A last test
checks that the two tables together cover every error the botocore model declares for every
implemented action.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import botocore.session
import pytest
from botocore.exceptions import ClientError

from ecr_emulator import actions
from ecr_emulator.protocol import ACTIONS
from tests.emulator.api import triggers
from tests.emulator.api.helpers import (
    digest,
    image_manifest,
    index_manifest,
    push_image,
    push_layer,
)
from tests.support.emulator import EmulatorProcess, ecr_client, signed_headers

LIMITS = {"ECR_EMULATOR_MAX_PARTS": "3", "ECR_EMULATOR_MAX_IMAGES_PER_REPOSITORY": "3"}


@dataclass
class Ctx:
    ecr: Any                  # no retries
    raw: Any                  # no client-side parameter validation either
    emulator: EmulatorProcess
    repo: str

    async def create(self, **kwargs: Any) -> str:
        await self.ecr.create_repository(repositoryName=self.repo, **kwargs)
        return self.repo

    async def upload(self, data: bytes) -> str:
        """An upload of ``data`` in one part, not completed; returns its id."""
        return await triggers.upload_one_part(self.ecr, self.repo, data)


Trigger = Callable[[Ctx], Awaitable[Any]]
MISSING = "sha256:" + "0" * 64


def nowhere(ctx: Ctx) -> str:
    return ctx.repo + "-missing"


async def unreferenced_download(ctx: Ctx) -> Any:
    await ctx.create()
    layer = await push_layer(ctx.ecr, ctx.repo, b"never in a manifest")
    return await ctx.ecr.get_download_url_for_layer(repositoryName=ctx.repo, layerDigest=layer)


async def vanished_blob(ctx: Ctx) -> Any:
    await ctx.create()
    layer = os.urandom(32)
    await push_image(ctx.ecr, ctx.repo, "v1", layers=[layer])
    encoded = digest(layer).split(":")[1]
    (ctx.emulator.data_dir / "blobs" / "sha256" / encoded[:2] / encoded).unlink()
    return await ctx.ecr.get_download_url_for_layer(repositoryName=ctx.repo,
                                                    layerDigest=digest(layer))


async def missing_layers(ctx: Ctx) -> Any:
    await ctx.create()
    text = image_manifest(b"{}", [b"never uploaded"])
    return await ctx.ecr.put_image(repositoryName=ctx.repo, imageManifest=text)


async def missing_children(ctx: Ctx) -> Any:
    await ctx.create()
    return await ctx.ecr.put_image(repositoryName=ctx.repo,
                                   imageManifest=index_manifest(['{"not":"pushed"}']))


async def immutable_retag(ctx: Ctx) -> Any:
    await ctx.create(imageTagMutability="IMMUTABLE")
    await push_image(ctx.ecr, ctx.repo, "release")
    await push_image(ctx.ecr, ctx.repo, "release")


async def no_media_type(ctx: Ctx) -> Any:
    await ctx.create()
    for blob in (b"{}", b"l"):
        await push_layer(ctx.ecr, ctx.repo, blob)
    text = image_manifest(b"{}", [b"l"], media_type=None)
    return await ctx.ecr.put_image(repositoryName=ctx.repo, imageManifest=text)


async def unknown_upload(ctx: Ctx) -> Any:
    await ctx.create()
    return await ctx.ecr.upload_layer_part(repositoryName=ctx.repo, uploadId=str(uuid.uuid4()),
                                           partFirstByte=0, partLastByte=0, layerPartBlob=b"x")


async def part_wrong_length(ctx: Ctx) -> Any:
    await ctx.create()
    upload_id = (await ctx.ecr.initiate_layer_upload(repositoryName=ctx.repo))["uploadId"]
    return await ctx.ecr.upload_layer_part(repositoryName=ctx.repo, uploadId=upload_id,
                                           partFirstByte=0, partLastByte=9, layerPartBlob=b"abc")


async def other_repository_upload(ctx: Ctx) -> Any:
    await ctx.create()
    upload_id = await ctx.upload(b"abc")
    await ctx.ecr.create_repository(repositoryName=ctx.repo + "-b")
    return await ctx.ecr.complete_layer_upload(repositoryName=ctx.repo + "-b",
                                               uploadId=upload_id, layerDigests=[digest(b"abc")])


async def image_not_found(ctx: Ctx) -> Any:
    await ctx.create()
    return await ctx.ecr.describe_images(repositoryName=ctx.repo, imageIds=[{"imageTag": "no"}])


async def oversized_manifest(ctx: Ctx) -> Any:
    await ctx.create()
    return await ctx.raw.put_image(repositoryName=ctx.repo, imageManifest="x" * 4_194_305)


async def bad_token(ctx: Ctx) -> Any:
    await ctx.create()
    return await ctx.ecr.list_images(repositoryName=ctx.repo, nextToken="garbage")


R = "RepositoryNotFoundException"
IPE = "InvalidParameterException"

NATURAL: list[tuple[str, str, str, Trigger]] = [
    ("CreateRepository", "RepositoryAlreadyExistsException", "create the same name twice",
     lambda c: triggers.create_twice(c.ecr, c.repo)),
    ("CreateRepository", IPE, "upper-case name",
     lambda c: c.ecr.create_repository(repositoryName="Team/App")),
    ("CreateRepository", IPE, "exclusion filters with plain MUTABLE",
     lambda c: c.create(imageTagMutabilityExclusionFilters=[
         {"filterType": "WILDCARD", "filter": "x*"}])),
    ("CreateRepository", "InvalidTagParameterException", "a 129-character tag key",
     lambda c: c.create(tags=[{"Key": "k" * 129, "Value": "v"}])),
    ("CreateRepository", "TooManyTagsException", "51 tags",
     lambda c: c.create(tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)])),
    ("DescribeRepositories", R, "an unknown name",
     lambda c: c.ecr.describe_repositories(repositoryNames=[nowhere(c)])),
    ("DescribeRepositories", IPE, "maxResults together with repositoryNames",
     lambda c: c.ecr.describe_repositories(repositoryNames=["a1"], maxResults=5)),
    ("DeleteRepository", R, "an unknown name",
     lambda c: c.ecr.delete_repository(repositoryName=nowhere(c))),
    ("DeleteRepository", "RepositoryNotEmptyException", "images left, no force",
     lambda c: triggers.repository_with_image(c.ecr, c.repo)),
    ("DeleteRepository", IPE, "repositoryName missing", lambda c: c.raw.delete_repository()),
    ("BatchCheckLayerAvailability", R, "an unknown repository",
     lambda c: c.ecr.batch_check_layer_availability(repositoryName=nowhere(c),
                                                    layerDigests=[MISSING])),
    ("BatchCheckLayerAvailability", IPE, "101 digests (the model allows 100)",
     lambda c: c.ecr.batch_check_layer_availability(repositoryName="a1",
                                                    layerDigests=[MISSING] * 101)),
    ("InitiateLayerUpload", R, "an unknown repository",
     lambda c: c.ecr.initiate_layer_upload(repositoryName=nowhere(c))),
    ("InitiateLayerUpload", IPE, "a registryId that is not 12 digits",
     lambda c: c.ecr.initiate_layer_upload(repositoryName="a1", registryId="abc")),
    ("UploadLayerPart", R, "an unknown repository",
     lambda c: c.ecr.upload_layer_part(repositoryName=nowhere(c), uploadId=str(uuid.uuid4()),
                                       partFirstByte=0, partLastByte=0, layerPartBlob=b"x")),
    ("UploadLayerPart", "UploadNotFoundException", "an uploadId never issued", unknown_upload),
    ("UploadLayerPart", "InvalidLayerPartException", "first byte does not follow",
     lambda c: triggers.part_out_of_order(c.ecr, c.repo)),
    ("UploadLayerPart", "InvalidLayerPartException", "blob shorter than the byte range",
     part_wrong_length),
    ("UploadLayerPart", IPE, "uploadId that is not a UUID",
     lambda c: c.ecr.upload_layer_part(repositoryName="a1", uploadId="nope", partFirstByte=0,
                                       partLastByte=0, layerPartBlob=b"x")),
    ("UploadLayerPart", "LimitExceededException", "a fourth part (limit set to 3)",
     lambda c: triggers.too_many_parts(c.ecr, c.repo)),
    ("CompleteLayerUpload", R, "an unknown repository",
     lambda c: c.ecr.complete_layer_upload(repositoryName=nowhere(c),
                                           uploadId=str(uuid.uuid4()), layerDigests=[MISSING])),
    ("CompleteLayerUpload", "UploadNotFoundException", "the upload of another repository",
     other_repository_upload),
    ("CompleteLayerUpload", "InvalidLayerException", "digest of other bytes",
     lambda c: triggers.complete(c.ecr, c.repo, b"abc", [digest(b"abd")])),
    ("CompleteLayerUpload", "InvalidLayerException", "a sha512 digest",
     lambda c: triggers.complete(c.ecr, c.repo, b"abc", ["sha512:" + "a" * 128])),
    ("CompleteLayerUpload", "LayerPartTooSmallException", "a 1 MiB part before the last",
     lambda c: triggers.two_parts_first_small(c.ecr, c.repo)),
    ("CompleteLayerUpload", "LayerAlreadyExistsException", "the same layer twice",
     lambda c: triggers.layer_twice(c.ecr, c.repo)),
    ("CompleteLayerUpload", "EmptyUploadException", "no part uploaded",
     lambda c: triggers.empty_upload(c.ecr, c.repo)),
    ("CompleteLayerUpload", IPE, "two digests",
     lambda c: triggers.complete(c.ecr, c.repo, b"abc", [digest(b"abc"), digest(b"abc")])),
    ("GetDownloadUrlForLayer", R, "an unknown repository",
     lambda c: c.ecr.get_download_url_for_layer(repositoryName=nowhere(c), layerDigest=MISSING)),
    ("GetDownloadUrlForLayer", "LayersNotFoundException", "a layer no image references",
     unreferenced_download),
    ("GetDownloadUrlForLayer", "LayerInaccessibleException", "the layer's blob file is gone",
     vanished_blob),
    ("GetDownloadUrlForLayer", IPE, "a malformed digest",
     lambda c: c.ecr.get_download_url_for_layer(repositoryName="a1", layerDigest="nodigest")),
    ("PutImage", R, "an unknown repository",
     lambda c: c.ecr.put_image(repositoryName=nowhere(c), imageManifest="{}")),
    ("PutImage", "ImageAlreadyExistsException", "same manifest and tag again",
     lambda c: triggers.same_image_twice(c.ecr, c.repo)),
    ("PutImage", "LayersNotFoundException", "a layer never uploaded", missing_layers),
    ("PutImage", "ReferencedImagesNotFoundException", "an index of unknown manifests",
     missing_children),
    ("PutImage", "ImageTagAlreadyExistsException", "moving a tag in an IMMUTABLE repository",
     immutable_retag),
    ("PutImage", "ImageDigestDoesNotMatchException", "imageDigest of another manifest",
     lambda c: triggers.wrong_image_digest(c.ecr, c.repo)),
    ("PutImage", IPE, "no mediaType in manifest or parameter", no_media_type),
    ("PutImage", IPE, "a tag outside the grammar",
     lambda c: c.ecr.put_image(repositoryName="a1", imageManifest="{}", imageTag="bad tag")),
    ("PutImage", IPE, "a manifest of 4,194,305 characters", oversized_manifest),
    ("PutImage", "LimitExceededException", "a fourth image (limit set to 3)",
     lambda c: triggers.too_many_images(c.ecr, c.repo)),
    ("BatchGetImage", R, "an unknown repository",
     lambda c: c.ecr.batch_get_image(repositoryName=nowhere(c), imageIds=[{"imageTag": "a"}])),
    ("BatchGetImage", IPE, "101 image ids",
     lambda c: c.ecr.batch_get_image(repositoryName="a1", imageIds=[{"imageTag": "a"}] * 101)),
    ("ListImages", R, "an unknown repository",
     lambda c: c.ecr.list_images(repositoryName=nowhere(c))),
    ("ListImages", IPE, "a made-up nextToken", bad_token),
    ("ListImages", IPE, "maxResults 1001",
     lambda c: c.ecr.list_images(repositoryName="a1", maxResults=1001)),
    ("DescribeImages", R, "an unknown repository",
     lambda c: c.ecr.describe_images(repositoryName=nowhere(c))),
    ("DescribeImages", "ImageNotFoundException", "an unknown tag in imageIds", image_not_found),
    ("DescribeImages", IPE, "imageIds together with maxResults",
     lambda c: c.ecr.describe_images(repositoryName="a1", imageIds=[{"imageTag": "a"}],
                                     maxResults=2)),
    ("BatchDeleteImage", R, "an unknown repository",
     lambda c: c.ecr.batch_delete_image(repositoryName=nowhere(c),
                                        imageIds=[{"imageTag": "a"}])),
    ("BatchDeleteImage", IPE, "an empty imageIds list",
     lambda c: c.raw.batch_delete_image(repositoryName="a1", imageIds=[])),
    ("ListImageReferrers", R, "an unknown repository",
     lambda c: c.ecr.list_image_referrers(repositoryName=nowhere(c),
                                          subjectId={"imageDigest": MISSING})),
    ("ListImageReferrers", IPE, "maxResults 51 (the model allows 50)",
     lambda c: c.ecr.list_image_referrers(repositoryName="a1",
                                          subjectId={"imageDigest": MISSING}, maxResults=51)),
    ("ListImageReferrers", IPE, "a subject digest that is not one",
     lambda c: c.ecr.list_image_referrers(repositoryName="a1",
                                          subjectId={"imageDigest": "sha256:abc"})),
    ("GetAuthorizationToken", IPE, "a registry id that is not 12 digits",
     lambda c: c.ecr.get_authorization_token(registryIds=["abc"])),
]

# Injected here: internal failures, KMS (not emulated) and upstream failures (raised for
# real by pull through cache in tests/emulator/model/test_pull_through*.py).
NOT_EMULATED = {"ServerException", "KmsException", "UnableToGetUpstreamImageException",
                "UnableToGetUpstreamLayerException", "UnableToListUpstreamImageReferrersException",
                # Declared by ListImageReferrers, but ECR answers a broken constraint of the
                # model with InvalidParameterException (validation.constraint_error).
                "ValidationException"}
# Only reachable through a separate emulator (one repository allowed).
TINY = [("CreateRepository", "LimitExceededException", "a second repository (limit 1)")]
# BatchGetImage's LimitExceededException is ECR's request-rate quota, which is not emulated.
THROTTLES = {("BatchGetImage", "LimitExceededException")}

# Minimal valid input per action: an injected fault fires after validation.
VALID: dict[str, dict[str, Any]] = {
    "CreateRepository": {"repositoryName": "a1"},
    "DescribeRepositories": {},
    "DeleteRepository": {"repositoryName": "a1"},
    "BatchCheckLayerAvailability": {"repositoryName": "a1", "layerDigests": [MISSING]},
    "InitiateLayerUpload": {"repositoryName": "a1"},
    "UploadLayerPart": {"repositoryName": "a1", "uploadId": str(uuid.UUID(int=0)),
                        "partFirstByte": 0, "partLastByte": 0, "layerPartBlob": b"x"},
    "CompleteLayerUpload": {"repositoryName": "a1", "uploadId": str(uuid.UUID(int=0)),
                            "layerDigests": [MISSING]},
    "GetDownloadUrlForLayer": {"repositoryName": "a1", "layerDigest": MISSING},
    "PutImage": {"repositoryName": "a1", "imageManifest": "{}"},
    "BatchGetImage": {"repositoryName": "a1", "imageIds": [{"imageTag": "a"}]},
    "ListImages": {"repositoryName": "a1"},
    "DescribeImages": {"repositoryName": "a1"},
    "BatchDeleteImage": {"repositoryName": "a1", "imageIds": [{"imageTag": "a"}]},
    "ListImageReferrers": {"repositoryName": "a1", "subjectId": {"imageDigest": MISSING}},
    "GetAuthorizationToken": {},
}


# Repository policies, lifecycle policies and resource tags have their own table, with ECR
# Public's actions: tests/emulator/extra/test_parity.py.
OWN_TABLE = {"SetRepositoryPolicy", "GetRepositoryPolicy", "DeleteRepositoryPolicy",
             "PutLifecyclePolicy", "GetLifecyclePolicy", "DeleteLifecyclePolicy",
             "StartLifecyclePolicyPreview", "GetLifecyclePolicyPreview",
             "ListTagsForResource", "TagResource", "UntagResource"}


# The registry-wide actions (pull through cache, templates, scanning, settings...) too:
# tests/emulator/model/test_errors.py.
REGISTRY_MODULES = {"account", "pull_through", "pull_time", "registry_policy", "replication",
                    "scanning", "signing", "storage_class", "tag_mutability", "templates"}


def declared_errors() -> dict[str, set[str]]:
    assert actions  # imported to register the handlers in ACTIONS
    model = botocore.session.get_session().get_service_model("ecr")
    return {name: {e.name for e in model.operation_model(name).error_shapes}
            for name, spec in ACTIONS.items() if name not in OWN_TABLE
            and spec.handler.__module__.rsplit(".", 1)[-1] not in REGISTRY_MODULES}


def injected_rows() -> list[tuple[str, str]]:
    return sorted((action, error) for action, errors in declared_errors().items()
                  for error in errors if error in NOT_EMULATED or (action, error) in THROTTLES)


@pytest.fixture(scope="module")
def errors_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with EmulatorProcess(tmp_path_factory.mktemp("errors"), env=LIMITS) as emu:
        yield emu


@pytest.fixture
async def ctx(errors_emulator: EmulatorProcess) -> AsyncIterator[Ctx]:
    async with ecr_client(errors_emulator.url, retries={"total_max_attempts": 1}) as ecr, \
            ecr_client(errors_emulator.url, retries={"total_max_attempts": 1},
                       parameter_validation=False) as raw:
        yield Ctx(ecr, raw, errors_emulator, f"err/{uuid.uuid4().hex[:10]}")


@pytest.mark.parametrize(("action", "exception", "trigger"), [
    pytest.param(action, exception, trigger, id=f"{action}-{exception}-{why}")
    for action, exception, why, trigger in NATURAL])
async def test_natural(ctx: Ctx, action: str, exception: str, trigger: Trigger) -> None:
    with pytest.raises(ClientError) as info:
        await trigger(ctx)
    triggers.assert_raised([ctx.ecr, ctx.raw], info, action, exception)


async def test_tiny_limits(tmp_path: Path) -> None:
    with EmulatorProcess(tmp_path / "tiny", env={"ECR_EMULATOR_MAX_REPOSITORIES": "1"}) as emu:
        async with ecr_client(emu.url) as ecr:
            await ecr.create_repository(repositoryName="only")
            with pytest.raises(ClientError) as info:
                await ecr.create_repository(repositoryName="second")
            triggers.assert_raised([ecr], info, *TINY[0][:2])


@pytest.mark.parametrize(("action", "exception"), [
    pytest.param(action, exception, id=f"{action}-{exception}")
    for action, exception in injected_rows()])
async def test_injected(ctx: Ctx, action: str, exception: str) -> None:
    ctx.emulator.inject_fault(action, exception)
    with pytest.raises(ClientError) as info:
        await getattr(ctx.ecr, triggers.snake(action))(**VALID[action])
    triggers.assert_raised([ctx.ecr, ctx.raw], info, action, exception)
    if exception == "ServerException":
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


def test_every_action_has_valid_input() -> None:
    assert set(VALID) == set(declared_errors())


def test_every_declared_error_is_covered() -> None:
    covered = {(a, e) for a, e, _, _ in NATURAL} | {(a, e) for a, e, _ in TINY}
    covered |= set(injected_rows())
    missing = {(action, error) for action, errors in declared_errors().items()
               for error in errors} - covered
    assert not missing, f"no trigger for {sorted(missing)}"


async def test_invalid_layer_part_carries_resume_point(ctx: Ctx) -> None:
    await ctx.create()
    upload_id = await ctx.upload(b"0123456789")
    with pytest.raises(ctx.ecr.exceptions.InvalidLayerPartException) as info:
        await ctx.ecr.upload_layer_part(repositoryName=ctx.repo, uploadId=upload_id,
                                        partFirstByte=0, partLastByte=9,
                                        layerPartBlob=b"0123456789")
    error = info.value.response
    assert (error["registryId"], error["repositoryName"], error["uploadId"],
            error["lastValidByteReceived"]) == (ctx.emulator.account_id, ctx.repo, upload_id, 9)
    resumed = await ctx.ecr.upload_layer_part(
        repositoryName=ctx.repo, uploadId=upload_id,
        partFirstByte=error["lastValidByteReceived"] + 1, partLastByte=12, layerPartBlob=b"abc")
    assert resumed["lastByteReceived"] == 12


async def test_failed_completion_ends_the_upload(ctx: Ctx) -> None:
    await ctx.create()
    upload_id = await ctx.upload(b"abc")
    with pytest.raises(ctx.ecr.exceptions.InvalidLayerException):
        await ctx.ecr.complete_layer_upload(repositoryName=ctx.repo, uploadId=upload_id,
                                            layerDigests=[digest(b"abd")])
    with pytest.raises(ctx.ecr.exceptions.UploadNotFoundException):
        await ctx.ecr.complete_layer_upload(repositoryName=ctx.repo, uploadId=upload_id,
                                            layerDigests=[digest(b"abc")])


@pytest.mark.parametrize(("target", "body", "error"), [
    # A body the service cannot read into the action's input: SerializationException, as
    # JSON services answer, whatever the action declares for broken constraints.
    ("CreateRepository", b"{not json", "SerializationException"),
    ("CreateRepository", b"[1, 2]", "SerializationException"),
    ("CreateRepository", b'{"repositoryName": 12}', "SerializationException"),
    ("ListImageReferrers", b"{", "SerializationException"),
    ("ListImages", b'{"repositoryName": "a1", "maxResults": "5"}', "SerializationException"),
    ("UploadLayerPart", b'{"repositoryName":"a1","uploadId":"00000000-0000-0000-0000-'
     b'000000000000","partFirstByte":0,"partLastByte":0,"layerPartBlob":"***"}',
     "SerializationException"),
    # A readable body that breaks a constraint: the action's own error.
    ("CreateRepository", b'{"repositoryName": "Upper"}', "InvalidParameterException"),
    ("ListImageReferrers", b'{"repositoryName": "a1", "subjectId": {"imageDigest": "sha256:'
     + b"a" * 64 + b'"}, "maxResults": 51}', "InvalidParameterException"),
    ("NoSuchAction", b"{}", "UnknownOperationException"),
])
async def test_malformed_requests(errors_emulator: EmulatorProcess, target: str, body: bytes,
                                  error: str) -> None:
    headers = signed_headers(errors_emulator.url, body, {
        "X-Amz-Target": f"AmazonEC2ContainerRegistry_V20150921.{target}",
        "Content-Type": "application/x-amz-json-1.1"})
    async with aiohttp.ClientSession() as session, session.post(
            errors_emulator.url, data=body, headers=headers) as r:
        assert r.status == 400
        assert r.headers["Content-Type"] == "application/x-amz-json-1.1"
        answer = json.loads(await r.read())
    assert answer["__type"] == error and answer["message"]


async def test_caller_gone_mid_body(errors_emulator: EmulatorProcess) -> None:
    """A caller killed while sending a part leaves a log line, no traceback, nothing stored."""
    port = int(errors_emulator.url.rsplit(":", 1)[1])
    signed = signed_headers(errors_emulator.url, b"x" * 100000, {
        "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.UploadLayerPart",
        "Content-Type": "application/x-amz-json-1.1"})
    head = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in signed.items())
            + "Content-Length: 100000\r\n\r\n")
    before = errors_emulator.log_path.read_text(errors="replace")
    seen = len(errors_emulator.requests("UploadLayerPart"))
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + b'{"repositoryName":"a1","layerPartBlob":"AAAA')
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.transport.abort()  # a RST, as a killed process leaves
    for _ in range(50):
        if len(errors_emulator.requests("UploadLayerPart")) > seen:
            break
        await asyncio.sleep(0.1)
    logged = errors_emulator.requests("UploadLayerPart")[-1]
    assert logged["outcome"] == "ClientDisconnected"
    added = errors_emulator.log_path.read_text(errors="replace")[len(before):]
    assert "went away" in added and "Traceback" not in added
