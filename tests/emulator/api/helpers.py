"""Pushing layers and images through the ECR API, as a registry client does."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MiB = 1024 * 1024


def digest(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return "sha256:" + hashlib.sha256(raw).hexdigest()


async def push_layer(ecr: Any, repository: str, data: bytes, part_size: int = 10 * MiB) -> str:
    """InitiateLayerUpload, UploadLayerPart per part, CompleteLayerUpload; returns the digest."""
    upload_id = (await ecr.initiate_layer_upload(repositoryName=repository))["uploadId"]
    for first in range(0, len(data), part_size):
        part = data[first:first + part_size]
        await ecr.upload_layer_part(repositoryName=repository, uploadId=upload_id,
                                    partFirstByte=first, partLastByte=first + len(part) - 1,
                                    layerPartBlob=part)
    result = await ecr.complete_layer_upload(repositoryName=repository, uploadId=upload_id,
                                             layerDigests=[digest(data)])
    return str(result["layerDigest"])


async def ensure_layer(ecr: Any, repository: str, data: bytes) -> str:
    """Upload ``data`` unless BatchCheckLayerAvailability says the repository has it."""
    found = await ecr.batch_check_layer_availability(repositoryName=repository,
                                                     layerDigests=[digest(data)])
    if any(layer["layerAvailability"] == "AVAILABLE" for layer in found["layers"]):
        return digest(data)
    return await push_layer(ecr, repository, data)


def image_manifest(config: bytes, layers: list[bytes], *, media_type: str | None = OCI_MANIFEST,
                   config_type: str = OCI_CONFIG, layer_type: str = OCI_LAYER,
                   **extra: Any) -> str:
    doc: dict[str, Any] = {"schemaVersion": 2}
    if media_type:
        doc["mediaType"] = media_type
    doc["config"] = {"mediaType": config_type, "digest": digest(config), "size": len(config)}
    doc["layers"] = [{"mediaType": layer_type, "digest": digest(layer), "size": len(layer)}
                     for layer in layers]
    doc.update(extra)
    return json.dumps(doc, indent=2)


def index_manifest(children: list[str], media_type: str = OCI_INDEX, **extra: Any) -> str:
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest(child), "size": len(child.encode()),
         "platform": {"architecture": f"arch{i}", "os": "linux"}}
        for i, child in enumerate(children)]}
    doc.update(extra)
    return json.dumps(doc)


async def push_image(ecr: Any, repository: str, tag: str | None = "latest", *,
                     layers: list[bytes] | None = None, config: bytes | None = None,
                     **manifest_extra: Any) -> tuple[str, str]:
    """Push fresh random layers (unless given), a config and an OCI manifest: (digest, text)."""
    layers = [os.urandom(64)] if layers is None else layers
    config = config if config is not None else json.dumps(
        {"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}).encode()
    for blob in [config, *layers]:
        await ensure_layer(ecr, repository, blob)
    text = image_manifest(config, layers, **manifest_extra)
    kwargs = {"imageTag": tag} if tag else {}
    await ecr.put_image(repositoryName=repository, imageManifest=text, **kwargs)
    return digest(text), text
