"""The same call sequences against moto (server mode) and the emulator, compared as a client
sees them.

moto implements ECR's control plane (and, since 5.2, an in-memory layer plane that checks
nothing). Where the two answer differently, the difference must be listed in ``KNOWN`` with
the sentence of the AWS API reference (botocore's model documentation) that decides it; the
test checks that each quoted sentence is really in the model, that every observed difference
is listed, and that every listed difference is still observed.
"""

from __future__ import annotations

import base64
import datetime
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.emulator.api.differential import (
    Known,
    assert_explained,
    known,
    model_documentation,
    moto_server,
)
from tests.emulator.api.helpers import digest, image_manifest, push_layer
from tests.support.emulator import EmulatorProcess, ecr_client

CONFIG, LAYER = b'{"architecture":"amd64","os":"linux"}', b"layer bytes for both"
M1 = image_manifest(CONFIG, [LAYER])
M2 = image_manifest(CONFIG, [LAYER], annotations={"revision": "2"})
SYMBOLS = {digest(M1): "<M1>", digest(M2): "<M2>", digest(CONFIG): "<CONFIG>",
           digest(LAYER): "<LAYER>"}


TAG_MOVE = ("moto deletes the image whose tag moved; ECR keeps it, untagged",
            "ListImages",
            "For example, you can filter your results to return only UNTAGGED images and then "
            "pipe that result to a BatchDeleteImage operation to delete them.")

# step -> the paths that differ, and why the emulator's answer is ECR's.
KNOWN: dict[str, Known] = {
    "push m1 as v1": known(
        {"image.imageId.imageDigest"},
        "digest = sha256 of the layer digests joined, not of the manifest",
        "ImageIdentifier.imageDigest", "The sha256 digest of the image manifest."),
    "describe the image": known(
        {"imageDetails.0.imageSizeInBytes",
         "imageDetails.0.artifactMediaType", "imageDetails.0.imageStatus"},
        "the config's size as the image's; no artifactMediaType nor imageStatus",
        "ImageDetail.imageSizeInBytes", "The size, in bytes, of the image in the repository."),
    "list after the tag moved": known(
        {"imageIds.0.imageTag", "imageIds.0.imageDigest", "imageIds.1.imageDigest",
         "imageIds.1.imageTag"}, *TAG_MOVE),
    "list untagged after the tag moved": known({"imageIds.0.imageDigest"}, *TAG_MOVE),
    "get the old image by digest": known(
        {"images.0.imageId.imageDigest", "images.0.imageManifest",
         "images.0.imageManifestMediaType", "images.0.registryId", "images.0.repositoryName",
         "failures.0.failureCode", "failures.0.failureReason", "failures.0.imageId.imageTag"},
        *TAG_MOVE),
    "complete after a small part": known(
        {"error", "layerDigest", "registryId", "repositoryName", "uploadId"},
        "accepts parts of any size",
        "LayerPartTooSmallException", "Layer parts must be at least 5 MiB in size."),
    "delete the old image by digest": known(
        {"imageIds.0.imageDigest", "failures.0.failureCode", "failures.0.failureReason",
         "failures.0.imageId.imageDigest"}, *TAG_MOVE),
    "authorization token": known(
        {"authorizationData.0.expiresAt"},
        "expiresAt is a fixed date in 2015",
        "AuthorizationData.expiresAt", "Authorization tokens are valid for 12 hours."),
    "check layers after the push": known(
        {"layers.0.mediaType", "layers.1.mediaType"},
        "every layer is application/vnd.docker.image.rootfs.diff.tar.gzip",
        "Layer.mediaType", "The media type of the layer, such as "
        "application/vnd.docker.image.rootfs.diff.tar.gzip or "
        "application/vnd.oci.image.layer.v1.tar+gzip."),
    "delete by digest, untagged": known(
        {"imageIds.0.imageDigest"},
        "returns no imageIds for an untagged image it deleted",
        "BatchDeleteImageResponse.imageIds", "The image IDs of the deleted images."),
}

# Where the emulator answers by its own choice rather than by the reference: step -> (paths,
# why).
EMULATOR_CHOICES: dict[str, tuple[frozenset[str], str]] = {
    "authorization token": (
        frozenset({"authorizationData.0.proxyEndpoint"}),
        "the registry endpoint of an emulator is the emulator, not "
        "https://<account>.dkr.ecr.<region>.amazonaws.com"),
    "check": (
        frozenset({"layers.0.mediaType"}),
        "a layer's media type is learnt from the first manifest that names it; before that it "
        "is not known, and the optional member is left out (moto always says docker gzip)"),
}


Step = Callable[[Any], Awaitable[Any]]


async def observe(ecr: Any, steps: list[tuple[str, Step]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    # A server's own digest for M1/M2 reads as <M1>/<M2> after the step that revealed it, so
    # that one wrong digest is reported once, not in every later step.
    aliases = dict(SYMBOLS)
    for name, step in steps:
        try:
            answer = await step(ecr)
            answer.pop("ResponseMetadata", None)
        except ClientError as error:
            answer = {"error": error.response["Error"]["Code"]}
        seen[name] = normalise(answer, aliases)
        image = answer.get("image", {})
        for text in (M1, M2):
            if image.get("imageManifest") == text:
                aliases[image["imageId"]["imageDigest"]] = SYMBOLS[digest(text)]
    return seen


def normalise(value: Any, aliases: dict[str, str], key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: normalise(v, aliases, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v, aliases, key) for v in value]
    if isinstance(value, datetime.datetime):
        return "<now>" if abs(value.timestamp() - datetime.datetime.now().timestamp()) < 600 \
            else value.isoformat()
    if isinstance(value, str):
        if value in aliases:
            return aliases[value]
        if re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", value):
            return "<uuid>"
        if key in ("failureReason", "message"):  # prose, not part of the contract
            return "<text>"
        if value.startswith("QVdTO"):  # base64 "AWS:..." authorization token
            return base64.b64decode(value).decode().split(":")[0] + ":<password>"
    return value


def repository_steps(repo: str) -> list[tuple[str, Step]]:
    return [
        ("create", lambda e: e.create_repository(repositoryName=repo)),
        ("create again", lambda e: e.create_repository(repositoryName=repo)),
        ("create immutable", lambda e: e.create_repository(
            repositoryName=repo + "-immutable", imageTagMutability="IMMUTABLE",
            tags=[{"Key": "team", "Value": "registry"}])),
        ("describe by name", lambda e: e.describe_repositories(repositoryNames=[repo])),
        ("describe missing", lambda e: e.describe_repositories(repositoryNames=[repo + "-no"])),
        ("delete missing", lambda e: e.delete_repository(repositoryName=repo + "-no")),
        ("delete immutable", lambda e: e.delete_repository(repositoryName=repo + "-immutable")),
    ]


def image_steps(repo: str) -> list[tuple[str, Step]]:
    return [
        ("push m1 as v1", lambda e: e.put_image(repositoryName=repo, imageManifest=M1,
                                                imageTag="v1")),
        ("push m1 as v1 again", lambda e: e.put_image(repositoryName=repo, imageManifest=M1,
                                                      imageTag="v1")),
        ("describe the image", lambda e: e.describe_images(repositoryName=repo)),
        ("get by tag", lambda e: e.batch_get_image(repositoryName=repo,
                                                   imageIds=[{"imageTag": "v1"}])),
        ("get a missing tag", lambda e: e.batch_get_image(repositoryName=repo,
                                                          imageIds=[{"imageTag": "nope"}])),
        ("list tagged", lambda e: e.list_images(repositoryName=repo,
                                                filter={"tagStatus": "TAGGED"})),
        ("delete a non-empty repository", lambda e: e.delete_repository(repositoryName=repo)),
        ("describe images of a missing repository",
         lambda e: e.describe_images(repositoryName=repo + "-no")),
        ("delete the tag", lambda e: e.batch_delete_image(repositoryName=repo,
                                                          imageIds=[{"imageTag": "v1"}])),
        ("list after deleting", lambda e: e.list_images(repositoryName=repo)),
        ("delete a missing tag", lambda e: e.batch_delete_image(repositoryName=repo,
                                                                imageIds=[{"imageTag": "v1"}])),
        ("push m2 untagged", lambda e: e.put_image(repositoryName=repo, imageManifest=M2,
                                                   imageDigest=digest(M2))),
        ("delete by digest, untagged", lambda e: e.batch_delete_image(
            repositoryName=repo, imageIds=[{"imageDigest": digest(M2)}])),
        ("delete the repository", lambda e: e.delete_repository(repositoryName=repo)),
    ]


def tag_move_steps(repo: str) -> list[tuple[str, Step]]:
    # imageDigest is passed so that moto's digests are the real ones too.
    return [
        ("push m1 by digest", lambda e: e.put_image(repositoryName=repo, imageManifest=M1,
                                                    imageTag="v1", imageDigest=digest(M1))),
        ("push m2 as v1", lambda e: e.put_image(repositoryName=repo, imageManifest=M2,
                                                imageTag="v1", imageDigest=digest(M2))),
        ("list after the tag moved", lambda e: e.list_images(repositoryName=repo)),
        ("list untagged after the tag moved",
         lambda e: e.list_images(repositoryName=repo, filter={"tagStatus": "UNTAGGED"})),
        ("get the old image by digest",
         lambda e: e.batch_get_image(repositoryName=repo, imageIds=[{"imageDigest": digest(M1)}])),
        ("check layers after the push", lambda e: e.batch_check_layer_availability(
            repositoryName=repo, layerDigests=[digest(CONFIG), digest(LAYER)])),
        ("delete the old image by digest", lambda e: e.batch_delete_image(
            repositoryName=repo, imageIds=[{"imageDigest": digest(M1)}])),
        ("force delete", lambda e: e.delete_repository(repositoryName=repo, force=True)),
        ("authorization token", lambda e: e.get_authorization_token()),
    ]


def layer_steps(repo: str) -> list[tuple[str, Step]]:
    upload: dict[str, str] = {}

    async def initiate(e: Any) -> Any:
        answer = await e.initiate_layer_upload(repositoryName=repo)
        upload["id"] = answer["uploadId"]
        return answer

    def part(first: int, data: bytes) -> Step:
        return lambda e: e.upload_layer_part(
            repositoryName=repo, uploadId=upload["id"], partFirstByte=first,
            partLastByte=first + len(data) - 1, layerPartBlob=data)

    def complete(data: bytes) -> Step:
        return lambda e: e.complete_layer_upload(repositoryName=repo, uploadId=upload["id"],
                                                 layerDigests=[digest(data)])

    return [
        ("initiate", initiate),
        ("first part", part(0, b"hello ")),
        ("second part", part(6, b"world")),
        ("part out of order", part(0, b"again")),
        ("complete after a small part", complete(b"hello world")),
        ("initiate again", initiate),
        ("the only part", part(0, b"hello world")),
        ("complete", complete(b"hello world")),
        ("check", lambda e: e.batch_check_layer_availability(
            repositoryName=repo, layerDigests=[digest(b"hello world"), digest(b"absent")])),
    ]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def diff_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with EmulatorProcess(tmp_path_factory.mktemp("diff")) as emu:
        yield emu


@pytest.fixture
async def clients(moto_url: str, diff_emulator: EmulatorProcess) -> AsyncIterator[
        tuple[Any, Any]]:
    async with ecr_client(moto_url, retries={"total_max_attempts": 1}) as moto, \
            ecr_client(diff_emulator.url, retries={"total_max_attempts": 1}) as emulator:
        yield moto, emulator


def compare(moto: dict[str, Any], emulator: dict[str, Any]) -> None:
    expected = {step: entry.paths for step, entry in KNOWN.items()}
    for step, (paths, _) in EMULATOR_CHOICES.items():
        expected[step] = expected.get(step, frozenset()) | paths
    assert_explained(moto, emulator, expected)


async def run_both(clients: tuple[Any, Any], repo: str, steps: list[tuple[str, Step]],
                   layers: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    moto, emulator = clients
    if layers:  # the emulator requires the blobs a manifest names (moto checks none)
        for client in (moto, emulator):
            await client.create_repository(repositoryName=repo)
            for blob in (CONFIG, LAYER):
                await push_layer(client, repo, blob)
    return await observe(moto, steps), await observe(emulator, steps)


async def test_repositories(clients: tuple[Any, Any]) -> None:
    compare(*await run_both(clients, "diff/repos", repository_steps("diff/repos")))


async def test_images(clients: tuple[Any, Any]) -> None:
    compare(*await run_both(clients, "diff/images", image_steps("diff/images"), layers=True))


async def test_tag_moves(clients: tuple[Any, Any]) -> None:
    compare(*await run_both(clients, "diff/moves", tag_move_steps("diff/moves"), layers=True))


async def test_layer_uploads(clients: tuple[Any, Any]) -> None:
    moto, emulator = clients
    for client in (moto, emulator):
        await client.create_repository(repositoryName="diff/layers")
    compare(*await run_both(clients, "diff/layers", layer_steps("diff/layers")))


def test_known_differences_quote_the_reference() -> None:
    for step, entry in KNOWN.items():
        assert entry.quote in model_documentation(entry.where), (step, entry.where)


def test_known_differences_name_real_steps() -> None:
    steps = {name for make in (repository_steps, image_steps, tag_move_steps, layer_steps)
             for name, _ in make("x/y")}
    assert set(KNOWN) | set(EMULATOR_CHOICES) <= steps
