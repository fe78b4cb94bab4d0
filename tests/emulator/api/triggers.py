"""Error triggers shared by the exception tables of ECR (test_errors.py) and of ECR Public
(emulator_extra/test_parity.py): both APIs take the same upload and image calls, so one
scenario serves either client."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.emulator.api.helpers import MiB, digest, push_image, push_layer


def snake(action: str) -> str:
    """The client method of an action: ``PutImage`` → ``put_image``."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in action).lstrip("_")


def assert_raised(clients: list[Any], info: pytest.ExceptionInfo[ClientError], action: str,
                  exception: str) -> None:
    """The error is ``client.exceptions.<exception>`` of the client that made the call."""
    assert info.value.response["Error"]["Code"] == exception, info.value
    assert info.value.operation_name == action
    if exception != "UnknownOperationException":  # not modelled: a plain ClientError
        assert any(isinstance(info.value, getattr(c.exceptions, exception)) for c in clients)


async def upload_one_part(client: Any, repo: str, data: bytes) -> str:
    """An upload of ``data`` in one part, not completed; returns its id."""
    upload_id = (await client.initiate_layer_upload(repositoryName=repo))["uploadId"]
    await client.upload_layer_part(repositoryName=repo, uploadId=upload_id, partFirstByte=0,
                                   partLastByte=len(data) - 1, layerPartBlob=data)
    return str(upload_id)


async def create_twice(client: Any, repo: str) -> Any:
    await client.create_repository(repositoryName=repo)
    await client.create_repository(repositoryName=repo)


async def complete(client: Any, repo: str, data: bytes, digests: list[str]) -> Any:
    await client.create_repository(repositoryName=repo)
    upload_id = await upload_one_part(client, repo, data)
    return await client.complete_layer_upload(repositoryName=repo, uploadId=upload_id,
                                              layerDigests=digests)


async def two_parts_first_small(client: Any, repo: str) -> Any:
    await client.create_repository(repositoryName=repo)
    upload_id = await upload_one_part(client, repo, b"x" * MiB)
    await client.upload_layer_part(repositoryName=repo, uploadId=upload_id,
                                   partFirstByte=MiB, partLastByte=MiB, layerPartBlob=b"y")
    return await client.complete_layer_upload(repositoryName=repo, uploadId=upload_id,
                                              layerDigests=[digest(b"x" * MiB + b"y")])


async def layer_twice(client: Any, repo: str) -> Any:
    await client.create_repository(repositoryName=repo)
    await push_layer(client, repo, b"same bytes")
    await push_layer(client, repo, b"same bytes")


async def empty_upload(client: Any, repo: str) -> Any:
    await client.create_repository(repositoryName=repo)
    upload_id = (await client.initiate_layer_upload(repositoryName=repo))["uploadId"]
    return await client.complete_layer_upload(repositoryName=repo, uploadId=upload_id,
                                              layerDigests=[digest(b"")])


async def part_out_of_order(client: Any, repo: str) -> Any:
    await client.create_repository(repositoryName=repo)
    upload_id = await upload_one_part(client, repo, b"first")
    return await client.upload_layer_part(repositoryName=repo, uploadId=upload_id,
                                          partFirstByte=99, partLastByte=99, layerPartBlob=b"x")


async def too_many_parts(client: Any, repo: str) -> Any:
    """Four parts; the emulators these tables run allow three."""
    await client.create_repository(repositoryName=repo)
    upload_id = (await client.initiate_layer_upload(repositoryName=repo))["uploadId"]
    for part in range(4):
        await client.upload_layer_part(repositoryName=repo, uploadId=upload_id,
                                       partFirstByte=part, partLastByte=part,
                                       layerPartBlob=b"z")


async def same_image_twice(client: Any, repo: str) -> Any:
    await client.create_repository(repositoryName=repo)
    _, text = await push_image(client, repo, "v1")
    return await client.put_image(repositoryName=repo, imageManifest=text, imageTag="v1")


async def wrong_image_digest(client: Any, repo: str) -> Any:
    await client.create_repository(repositoryName=repo)
    _, text = await push_image(client, repo, None)
    return await client.put_image(repositoryName=repo, imageManifest=text + " ",
                                  imageTag="x", imageDigest=digest(text))


async def too_many_images(client: Any, repo: str) -> Any:
    """Four images; the emulators these tables run allow three per repository."""
    await client.create_repository(repositoryName=repo)
    for _ in range(4):
        await push_image(client, repo, None)


async def repository_with_image(client: Any, repo: str) -> Any:
    await client.create_repository(repositoryName=repo)
    await push_image(client, repo, "v1")
    return await client.delete_repository(repositoryName=repo)
