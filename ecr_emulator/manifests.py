"""What PutImage needs to know about a manifest: its type and what it references.

Image manifests (Docker schema 2, OCI) reference blobs (config and layers), which must be
layers of the repository; indexes (Docker manifest list, OCI index) reference manifests,
which must be images of the repository; Docker schema 1 references layers as ``fsLayers``.
An OCI ``subject`` is recorded for ListImageReferrers but need not exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from ecr_emulator.errors import AwsError
from ecr_emulator.validation import is_digest

DOCKER_V1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

IMAGE_TYPES = frozenset({DOCKER_V2, OCI_MANIFEST})
INDEX_TYPES = frozenset({DOCKER_LIST, OCI_INDEX})
SCHEMA1_TYPES = frozenset({DOCKER_V1, DOCKER_V1_SIGNED})
SUPPORTED_TYPES = IMAGE_TYPES | INDEX_TYPES | SCHEMA1_TYPES
MAX_SIZE = 2**63 - 1  # a descriptor's size is an int64 (OCI image-spec); SQLite's INTEGER too


@dataclass(frozen=True)
class Descriptor:
    digest: str
    media_type: str | None = None
    size: int | None = None

    @property
    def distributable(self) -> bool:
        # Foreign layers live elsewhere (their ``urls``); registries do not hold them.
        media_type = self.media_type or ""
        return "foreign" not in media_type and "nondistributable" not in media_type


@dataclass(frozen=True)
class Manifest:
    media_type: str
    blobs: tuple[Descriptor, ...] = ()
    """Config and layers, in manifest order; the config (if any) comes first."""
    layers: tuple[Descriptor, ...] = ()
    children: tuple[str, ...] = ()
    config_media_type: str | None = None
    artifact_type: str | None = None
    subject: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def parse(text: str, declared_media_type: str | None) -> Manifest:
    """Parse ``text`` as the manifest PutImage received, or raise InvalidParameterException."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise _invalid("imageManifest", "Invalid JSON syntax") from None
    if not isinstance(doc, dict):
        raise _invalid("imageManifest", "Manifest must be a JSON object")
    own_type = doc.get("mediaType")
    if own_type is not None and not isinstance(own_type, str):
        raise _invalid("imageManifest", "mediaType must be a string")
    if declared_media_type and own_type and declared_media_type != own_type:
        raise _invalid("imageManifestMediaType",
                       f"'{declared_media_type}' does not match the manifest's '{own_type}'")
    media_type = declared_media_type or own_type
    if not media_type:
        raise AwsError("InvalidParameterException",
                       "image manifest media type not provided in the manifest or the "
                       "imageManifestMediaType parameter")
    if media_type not in SUPPORTED_TYPES:
        raise _invalid("imageManifestMediaType", f"Unsupported manifest media type '{media_type}'")
    if media_type in INDEX_TYPES:
        return _parse_index(doc, media_type)
    if media_type in SCHEMA1_TYPES:
        return _parse_schema1(doc, media_type)
    return _parse_image(doc, media_type)


def _parse_image(doc: dict[str, Any], media_type: str) -> Manifest:
    _schema_version(doc, 2)
    config = _descriptor(doc.get("config"), "config")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise _invalid("imageManifest", "layers must be a list")
    layer_descriptors = tuple(_descriptor(item, f"layers[{i}]") for i, item in enumerate(layers))
    # The image's size is their sum (a pull through cache stores it before any layer arrives).
    if sum(d.size or 0 for d in layer_descriptors) > MAX_SIZE:
        raise _invalid("imageManifest", "the layers' sizes add up to more than a 64-bit integer")
    return Manifest(
        media_type=media_type,
        blobs=(config, *layer_descriptors),
        layers=layer_descriptors,
        config_media_type=config.media_type,
        artifact_type=_artifact_type(doc),
        subject=_subject(doc),
        annotations=_annotations(doc),
    )


def _parse_index(doc: dict[str, Any], media_type: str) -> Manifest:
    _schema_version(doc, 2)
    manifests = doc.get("manifests")
    if not isinstance(manifests, list):
        raise _invalid("imageManifest", "manifests must be a list")
    children = [_descriptor(item, f"manifests[{i}]").digest for i, item in enumerate(manifests)]
    return Manifest(
        media_type=media_type,
        children=tuple(dict.fromkeys(children)),
        artifact_type=_artifact_type(doc),
        subject=_subject(doc),
        annotations=_annotations(doc),
    )


def _parse_schema1(doc: dict[str, Any], media_type: str) -> Manifest:
    _schema_version(doc, 1)
    fs_layers = doc.get("fsLayers")
    if not isinstance(fs_layers, list):
        raise _invalid("imageManifest", "fsLayers must be a list")
    layers = []
    for index, item in enumerate(fs_layers):
        digest = item.get("blobSum") if isinstance(item, dict) else None
        if not isinstance(digest, str) or not is_digest(digest):
            raise _invalid("imageManifest", f"fsLayers[{index}].blobSum must be a digest")
        layers.append(Descriptor(digest))
    unique = tuple(dict.fromkeys(layers))
    return Manifest(media_type=media_type, blobs=unique, layers=unique)


def _schema_version(doc: dict[str, Any], expected: int) -> None:
    version = doc.get("schemaVersion")
    # An integer: Python's == takes true for 1 and 2.0 for 2.
    if type(version) is not int or version != expected:
        raise _invalid("imageManifest", f"schemaVersion must be {expected}")


def _descriptor(item: Any, where: str) -> Descriptor:
    if not isinstance(item, dict):
        raise _invalid("imageManifest", f"{where} must be a descriptor object")
    digest, media_type, size = item.get("digest"), item.get("mediaType"), item.get("size")
    if not isinstance(digest, str) or not is_digest(digest):
        raise _invalid("imageManifest", f"{where}.digest must be a digest")
    if media_type is not None and not isinstance(media_type, str):
        raise _invalid("imageManifest", f"{where}.mediaType must be a string")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                             or not 0 <= size <= MAX_SIZE):
        raise _invalid("imageManifest", f"{where}.size must be a non-negative 64-bit integer")
    return Descriptor(digest, media_type, size)


def _artifact_type(doc: dict[str, Any]) -> str | None:
    value = doc.get("artifactType")
    return value if isinstance(value, str) else None


def _subject(doc: dict[str, Any]) -> str | None:
    subject = doc.get("subject")
    return None if subject is None else _descriptor(subject, "subject").digest


def _annotations(doc: dict[str, Any]) -> dict[str, str]:
    annotations = doc.get("annotations")
    if not isinstance(annotations, dict):
        return {}
    return {k: v for k, v in annotations.items() if isinstance(v, str)}


def _invalid(member: str, constraint: str) -> AwsError:
    return AwsError("InvalidParameterException",
                    f"Invalid parameter at '{member}' failed to satisfy constraint: '{constraint}'")
