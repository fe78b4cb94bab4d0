"""Large repositories made quickly, straight through the emulator's ECR API (aiobotocore).

``tag_many(url, repository, tags)`` puts one small image under every tag: its config blob is
uploaded once (InitiateLayerUpload, UploadLayerPart, CompleteLayerUpload), then one PutImage
per tag, ``chunk`` of them at a time. ``create_repositories(url, names)`` does the same with
CreateRepository. Pushing thousands of images through the OCI API would measure the push
path instead of making the data a listing test needs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence

from tests.support.emulator import ecr_client

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = b'{"architecture":"amd64","os":"linux"}'


def small_manifest() -> str:
    digest = "sha256:" + hashlib.sha256(CONFIG).hexdigest()
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": digest, "size": len(CONFIG)},
                       "layers": []})


async def tag_many(url: str, repository: str, tags: Sequence[str], *, chunk: int = 200) -> None:
    """Create ``repository`` (if needed) holding one image under every one of ``tags``."""
    async with ecr_client(url, max_pool_connections=chunk, parameter_validation=False) as ecr:
        try:
            await ecr.create_repository(repositoryName=repository)
        except ecr.exceptions.RepositoryAlreadyExistsException:
            pass
        upload = (await ecr.initiate_layer_upload(repositoryName=repository))["uploadId"]
        await ecr.upload_layer_part(repositoryName=repository, uploadId=upload, partFirstByte=0,
                                    partLastByte=len(CONFIG) - 1, layerPartBlob=CONFIG)
        try:
            await ecr.complete_layer_upload(
                repositoryName=repository, uploadId=upload,
                layerDigests=["sha256:" + hashlib.sha256(CONFIG).hexdigest()])
        except ecr.exceptions.LayerAlreadyExistsException:
            pass  # an earlier call put it there
        manifest = small_manifest()
        for start in range(0, len(tags), chunk):
            await asyncio.gather(*(
                ecr.put_image(repositoryName=repository, imageManifest=manifest,
                              imageManifestMediaType=OCI_MANIFEST, imageTag=tag)
                for tag in tags[start:start + chunk]))


async def create_repositories(url: str, names: Sequence[str], *, chunk: int = 200) -> None:
    async with ecr_client(url, max_pool_connections=chunk, parameter_validation=False) as ecr:
        for start in range(0, len(names), chunk):
            await asyncio.gather(*(ecr.create_repository(repositoryName=name)
                                   for name in names[start:start + chunk]))
