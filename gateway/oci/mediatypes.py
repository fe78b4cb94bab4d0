"""Manifest media types and the checks a pushed manifest must pass before it goes upstream."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from gateway.oci.digests import parse_digest
from gateway.oci.errors import MANIFEST_INVALID, OciError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
                  DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1)

# The largest manifest taken unless a backend declares otherwise (distribution's default).
DEFAULT_MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# image-spec descriptors: an RFC 6838 media type (matched whole: "$" would also take a
# trailing newline), a size that fits an int64.
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/"
                         r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
_MAX_SIZE = 2**63 - 1


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = self.annotations
        return out


@dataclass
class ParsedManifest:
    media_type: str
    blobs: list[Descriptor] = field(default_factory=list)  # config + layers
    children: list[Descriptor] = field(default_factory=list)  # an index's manifests
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None


def accepted_manifest_types(accept_headers: list[str]) -> tuple[str, ...] | None:
    """The manifest media types a client's Accept headers name, or None for "any".

    No Accept, a wildcard, or no manifest type at all named means any type will do.
    """
    named = set()
    for header in accept_headers:
        for item in header.split(","):
            value = item.split(";", 1)[0].strip().lower()
            if value in ("*/*", "application/*"):
                return None
            named.add(value)
    known = tuple(t for t in MANIFEST_TYPES if t in named)
    return known or None


def _shown(text: str) -> str:
    """A client's text as an error repeats it: its start (a manifest's mediaType may be
    megabytes, and the error says it twice)."""
    return text if len(text) <= 300 else text[:300] + "..."


def _invalid(reason: str) -> OciError:
    return OciError(MANIFEST_INVALID, {"reason": reason}, message=f"manifest invalid: {reason}")


def _descriptor(raw: Any, where: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise _invalid(f"{where} is not an object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise _invalid(f"{where}.mediaType missing")
    if not _MEDIA_TYPE.fullmatch(media_type):
        raise _invalid(f"{where}.mediaType is not a media type")
    if not isinstance(digest, str):
        raise _invalid(f"{where}.digest missing")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= _MAX_SIZE:
        raise _invalid(f"{where}.size must be a non-negative 64-bit integer")
    try:
        parse_digest(digest)
    except OciError:
        raise _invalid(f"{where}.digest is malformed") from None
    annotations = raw.get("annotations")
    if annotations is not None and not (
        isinstance(annotations, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items())
    ):
        raise _invalid(f"{where}.annotations must map strings to strings")
    artifact_type = raw.get("artifactType")
    return Descriptor(media_type, digest, size,
                      artifact_type if isinstance(artifact_type, str) else None, annotations)


def parse_manifest(body: bytes, content_type: str | None,
                   max_bytes: int = DEFAULT_MAX_MANIFEST_BYTES) -> ParsedManifest:
    """Check a pushed manifest: JSON, schema version, media type agreement, descriptors."""
    if len(body) > max_bytes:
        raise _invalid(f"larger than {max_bytes} bytes")
    try:
        # UTF-8 only (json.loads would also take UTF-16/32, which registries do not store); nesting
        # beyond the parser's recursion limit is a malformed manifest, not a crash.
        doc = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _invalid("not valid UTF-8 JSON") from None
    if not isinstance(doc, dict):
        raise _invalid("not a JSON object")
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _invalid("mediaType must be a string")
    content_type = (content_type or "").split(";")[0].strip() or None
    if declared and content_type and declared != content_type:
        raise _invalid(f"Content-Type {_shown(content_type)} does not match mediaType "
                       f"{_shown(declared)}")
    media_type = declared or content_type
    if media_type is None:
        # OCI manifests may omit mediaType; then the request's Content-Type is the only
        # statement of what the document is (storage keeps it with the manifest).
        raise _invalid("media type unknown: set mediaType or Content-Type")
    if media_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED):
        return ParsedManifest(media_type)
    if media_type not in MANIFEST_TYPES:
        raise _invalid(f"unsupported manifest media type {_shown(media_type)}")
    if doc.get("schemaVersion") != 2:
        raise _invalid("schemaVersion must be 2")
    parsed = ParsedManifest(media_type)
    if media_type in INDEX_TYPES:
        if "config" in doc or "layers" in doc:
            raise _invalid(f"an index ({media_type}) has no config or layers")
        manifests = doc.get("manifests")
        if not isinstance(manifests, list):
            raise _invalid("manifests must be a list")
        parsed.children = [_descriptor(m, f"manifests[{i}]") for i, m in enumerate(manifests)]
    else:
        if "manifests" in doc:
            raise _invalid(f"an image manifest ({media_type}) has no manifests list")
        if "config" not in doc:
            raise _invalid("config missing")
        parsed.blobs.append(_descriptor(doc["config"], "config"))
        layers = doc.get("layers", [])
        if not isinstance(layers, list):
            raise _invalid("layers must be a list")
        parsed.blobs += [_descriptor(layer, f"layers[{i}]") for i, layer in enumerate(layers)]
        for i, blob in enumerate(parsed.blobs):
            if blob.media_type in MANIFEST_TYPES:  # config and layers are blobs
                where = "config" if i == 0 else f"layers[{i - 1}]"
                raise _invalid(f"{where}.mediaType {blob.media_type} is a manifest type")
    if doc.get("subject") is not None:
        parsed.subject = _descriptor(doc["subject"], "subject")
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not (isinstance(artifact_type, str)
                                          and _MEDIA_TYPE.fullmatch(artifact_type)):
        raise _invalid("artifactType must be a media type")
    parsed.artifact_type = artifact_type
    annotations = doc.get("annotations")
    if annotations is not None and not (
        isinstance(annotations, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items())
    ):
        raise _invalid("annotations must map strings to strings")
    parsed.annotations = annotations
    return parsed
