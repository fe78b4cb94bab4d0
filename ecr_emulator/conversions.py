"""The manifest conversions BatchGetImage makes for ``acceptedMediaTypes``.

ECR answers an image in the format it was pushed in when the client accepts that format.
When it does not, and only when the image is asked for by tag, ECR converts the manifest to
a format the client accepts (user guide, "Container image manifest format support in Amazon
ECR", its table of conversions "when an image is pulled by tag"):

* pushed as Docker schema 2, asked for as OCI: converted to an OCI image manifest;
* pushed as OCI, asked for as Docker schema 2: converted to Docker schema 2;
* pushed as Docker schema 2, asked for as schema 1: converted to schema 1 (not done here: a
  schema 1 manifest is built from the image's configuration and signed; such a request gets
  the answer of a conversion that is not available);
* schema 1 to anything, and anything to schema 1 but schema 2: "no conversion available".

"When you pull an image by digest, there is no conversion available": the client must accept
the format the image was pushed in. The guide names no conversion of manifest lists or image
indexes, and none is made. An image no accepted format can carry is a failure of the request
(``unavailable``).

Unconfirmed, and chosen here: a converted manifest is answered with its own digest (its
bytes' sha256, what a registry client checks it against), not the stored image's; an OCI
manifest is converted only if it is an image (no ``subject``, no ``artifactType``) whose
config and layers all have a Docker counterpart (annotations, which schema 2 has no place
for, are left out); the converted manifest is JSON indented by three spaces, as the
distribution registry writes schema 2 manifests.
"""

from __future__ import annotations

import json
from typing import Any

from ecr_emulator import manifests
from ecr_emulator.image_store import Failure

# Docker schema 2 descriptor media types and their OCI counterparts (OCI image-spec,
# "Compatibility Matrix"; the distribution registry's schema2 package). Zstandard layers and
# OCI's other types have none.
_TO_OCI = {
    "application/vnd.docker.container.image.v1+json":
        "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.image.rootfs.diff.tar.gzip":
        "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar":  # distribution's uncompressed layer
        "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}
_TO_DOCKER = {oci: docker for docker, oci in _TO_OCI.items()}
# Stored format -> (format it converts to, descriptor media types mapped).
_CONVERSIONS = {
    manifests.DOCKER_V2: (manifests.OCI_MANIFEST, _TO_OCI),
    manifests.OCI_MANIFEST: (manifests.DOCKER_V2, _TO_DOCKER),
}


def convert(text: str, stored_type: str, accepted: list[str]) -> tuple[str, str] | None:
    """``text`` (a manifest stored as ``stored_type``) converted to a type in ``accepted``,
    with that type; None if ECR has no such conversion for it."""
    target = _CONVERSIONS.get(stored_type)
    if target is None or target[0] not in accepted:
        return None
    media_type, mapping = target
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or "subject" in doc or "artifactType" in doc:
        return None
    config = _descriptor(doc.get("config"), mapping)
    layers = doc.get("layers")
    if config is None or not isinstance(layers, list):
        return None
    converted_layers = [_descriptor(layer, mapping) for layer in layers]
    if any(layer is None for layer in converted_layers):
        return None
    converted = {"schemaVersion": 2, "mediaType": media_type, "config": config,
                 "layers": converted_layers}
    return json.dumps(converted, indent=3), media_type


def _descriptor(value: Any, mapping: dict[str, str]) -> dict[str, Any] | None:
    if not isinstance(value, dict) or value.get("mediaType") not in mapping:
        return None
    descriptor = {"mediaType": mapping[value["mediaType"]], "size": value.get("size"),
                  "digest": value.get("digest")}
    if "urls" in value:
        descriptor["urls"] = value["urls"]
    return descriptor


def unavailable(stored_type: str) -> Failure:
    """The failure for an image no accepted format can carry: not found in those formats.
    The model's failure codes have none for it (ImageFailureCode); ImageNotFound is what a
    registry answers a manifest request whose Accept the image is not in (404)."""
    return Failure("ImageNotFound", f"Requested image's media type '{stored_type}' is not "
                                    "among acceptedMediaTypes, and no conversion to one of "
                                    "them is available")
