"""Test images built offline with the standard library only.

* ``docker_archive``: a ``docker save``-style tar (``manifest.json`` + config + layer tars)
  that ``docker load -i`` and ``ctr images import`` accept.
* ``oci_layout`` / ``oci_index_layout``: an OCI image layout directory (``oci-layout``,
  ``index.json``, ``blobs/sha256/…``) for ``skopeo copy oci:DIR:tag``, with one image or an
  image index of several platforms.
* ``oci_archive``: such a layout as a tar (what ``ctr images import`` reads).

Layer contents are fresh random bytes (so no client cache has seen them) streamed to disk in
1 MiB chunks; digests are computed while writing, never by holding a layer in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

CHUNK = 1 << 20

OCI_LAYOUT_VERSION = "1.0.0"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"


# -- digests ---------------------------------------------------------------------------------

def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def hex_of(digest: str) -> str:
    return digest.split(":", 1)[1]


def canonical_json(value: Any) -> bytes:
    """The one byte form these helpers give a JSON document (so its digest is stable)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


# -- streams ---------------------------------------------------------------------------------

class RandomReader(io.RawIOBase):
    """``size`` fresh random bytes, read in whatever pieces the consumer asks for."""

    def __init__(self, size: int) -> None:
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._left, CHUNK)
        if n <= 0:
            return 0
        buffer[:n] = os.urandom(n)
        self._left -= n
        return n


class HashingWriter(io.RawIOBase):
    """Counts and hashes what passes through on its way to ``sink``."""

    def __init__(self, sink: BinaryIO | Any) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self._sink.write(view)
        self.size += len(view)
        return len(view)

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def write_random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path`` in chunks; return their digest."""
    with open(path, "wb") as handle:
        writer = HashingWriter(handle)
        reader = RandomReader(size)
        while chunk := reader.read(CHUNK):
            writer.write(chunk)
    return writer.digest


# -- blobs -----------------------------------------------------------------------------------

@dataclass
class Blob:
    digest: str
    size: int
    media_type: str
    path: Path

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}

    def read(self) -> bytes:
        return self.path.read_bytes()


@dataclass
class Layer(Blob):
    diff_id: str = ""  # digest of the uncompressed tar (equal to digest when uncompressed)


def _tar_of_random_file(out: Any, size: int, name: str) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o644
        info.mtime = 0
        tar.addfile(info, RandomReader(size))


def make_layer(blob_dir: Path, size: int, *, compress: bool = False,
               media_type: str | None = None) -> Layer:
    """A layer tar holding one file of ``size`` random bytes, stored as ``blob_dir/<hex>``.

    With ``compress`` the blob is gzip (level 1) and ``diff_id`` is the uncompressed digest.
    """
    blob_dir.mkdir(parents=True, exist_ok=True)
    spool = blob_dir / f".spool-{uuid.uuid4().hex}"
    name = f"data/{uuid.uuid4().hex}.bin"
    with open(spool, "wb") as handle:
        outer = HashingWriter(handle)
        if compress:
            with gzip.GzipFile(fileobj=outer, mode="wb", compresslevel=1, mtime=0) as gz:
                inner = HashingWriter(gz)
                _tar_of_random_file(inner, size, name)
            diff_id = inner.digest
        else:
            _tar_of_random_file(outer, size, name)
            diff_id = outer.digest
    digest = outer.digest
    path = blob_dir / hex_of(digest)
    os.replace(spool, path)
    kind = media_type or (OCI_LAYER_GZIP if compress else OCI_LAYER)
    return Layer(digest, outer.size, kind, path, diff_id)


def put_blob(blob_dir: Path, data: bytes, media_type: str) -> Blob:
    blob_dir.mkdir(parents=True, exist_ok=True)
    digest = sha256_bytes(data)
    path = blob_dir / hex_of(digest)
    path.write_bytes(data)
    return Blob(digest, len(data), media_type, path)


def image_config(diff_ids: Iterable[str], os_name: str = "linux",
                 architecture: str = "amd64") -> dict[str, Any]:
    ids = list(diff_ids)
    return {
        "architecture": architecture,
        "os": os_name,
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Labels": {"test.id": uuid.uuid4().hex}},
        "rootfs": {"type": "layers", "diff_ids": ids},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"}
                    for i in range(len(ids))],
    }


# -- docker archive --------------------------------------------------------------------------

@dataclass
class DockerArchive:
    path: Path
    repo_tag: str
    config: Blob
    layers: list[Layer]

    @property
    def image_id(self) -> str:
        return self.config.digest

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]


def docker_archive(path: Path, layer_sizes: Iterable[int], repo_tag: str) -> DockerArchive:
    """A ``docker save`` (format 1.2) tar with uncompressed random layers."""
    work = path.parent / f"{path.name}.blobs"
    layers = [make_layer(work, size) for size in layer_sizes]
    config_bytes = canonical_json(image_config(layer.diff_id for layer in layers))
    config = put_blob(work, config_bytes, "application/vnd.docker.container.image.v1+json")
    manifest = [{"Config": f"{hex_of(config.digest)}.json", "RepoTags": [repo_tag],
                 "Layers": [f"{hex_of(layer.diff_id)}/layer.tar" for layer in layers]}]
    with tarfile.open(path, "w") as tar:
        for layer in layers:
            tar.add(layer.path, arcname=f"{hex_of(layer.diff_id)}/layer.tar")
        tar.add(config.path, arcname=f"{hex_of(config.digest)}.json")
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    return DockerArchive(path, repo_tag, config, layers)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def read_docker_save(path: Path, out_dir: Path) -> tuple[dict[str, Any], list[str], str]:
    """Unpack a ``docker save`` tar: (manifest entry, layer tar digests, config digest)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path) as tar:
        tar.extractall(out_dir, filter="data")
    entries = json.loads((out_dir / "manifest.json").read_text())
    assert len(entries) == 1, entries
    entry = entries[0]
    layer_digests = [sha256_file(out_dir / name) for name in entry["Layers"]]
    return entry, layer_digests, sha256_file(out_dir / entry["Config"])


# -- OCI layout ------------------------------------------------------------------------------

@dataclass
class OciImage:
    manifest: Blob
    manifest_bytes: bytes
    config: Blob
    layers: list[Layer]
    platform: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return self.manifest.digest

    def blobs(self) -> list[Blob]:
        return [self.config, *self.layers]


@dataclass
class OciIndex:
    index: Blob
    index_bytes: bytes
    images: list[OciImage]

    @property
    def digest(self) -> str:
        return self.index.digest


def _blob_dir(layout: Path) -> Path:
    return layout / "blobs" / "sha256"


def build_oci_image(layout: Path, layer_sizes: Iterable[int], *, os_name: str = "linux",
                    architecture: str = "amd64", compress: bool = True) -> OciImage:
    """Write an image's blobs into ``layout`` (not referenced by index.json yet)."""
    blobs = _blob_dir(layout)
    layers = [make_layer(blobs, size, compress=compress) for size in layer_sizes]
    config_bytes = canonical_json(image_config((layer.diff_id for layer in layers),
                                               os_name, architecture))
    config = put_blob(blobs, config_bytes, OCI_CONFIG)
    manifest_doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": config.descriptor(),
                    "layers": [layer.descriptor() for layer in layers]}
    manifest_bytes = canonical_json(manifest_doc)
    manifest = put_blob(blobs, manifest_bytes, OCI_MANIFEST)
    platform = {"architecture": architecture, "os": os_name}
    return OciImage(manifest, manifest_bytes, config, layers, platform)


def _write_layout(layout: Path, descriptors: list[dict[str, Any]]) -> None:
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    (layout / "index.json").write_text(json.dumps(index))


def oci_layout(layout: Path, tag: str, layer_sizes: Iterable[int], *,
               architecture: str = "amd64", compress: bool = True) -> OciImage:
    """An OCI layout whose index.json names one image manifest as ``tag``."""
    layout.mkdir(parents=True, exist_ok=True)
    image = build_oci_image(layout, layer_sizes, architecture=architecture, compress=compress)
    _write_layout(layout, [image.manifest.descriptor(annotations={REF_NAME: tag})])
    return image


def oci_index_layout(layout: Path, tag: str, layer_sizes: Iterable[int],
                     platforms: Iterable[tuple[str, str]] = (("linux", "amd64"),
                                                             ("linux", "arm64"))) -> OciIndex:
    """An OCI layout whose ``tag`` is an image index over one image per platform."""
    layout.mkdir(parents=True, exist_ok=True)
    sizes = list(layer_sizes)
    images = [build_oci_image(layout, sizes, os_name=os_name, architecture=arch)
              for os_name, arch in platforms]
    index_doc = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                 "manifests": [image.manifest.descriptor(platform=image.platform)
                               for image in images]}
    index_bytes = canonical_json(index_doc)
    index = put_blob(_blob_dir(layout), index_bytes, OCI_INDEX)
    _write_layout(layout, [index.descriptor(annotations={REF_NAME: tag})])
    return OciIndex(index, index_bytes, images)


def layout_blob(layout: Path, digest: str) -> Path:
    return _blob_dir(layout) / hex_of(digest)


def layout_ref(layout: Path, tag: str) -> dict[str, Any]:
    """The index.json descriptor that names ``tag`` in a layout (e.g. one skopeo wrote)."""
    index = json.loads((layout / "index.json").read_text())
    for descriptor in index.get("manifests", []):
        if descriptor.get("annotations", {}).get(REF_NAME) == tag:
            return dict(descriptor)
    raise AssertionError(f"{tag!r} is not in {layout}/index.json: {index}")


def oci_archive(layout: Path, path: Path) -> Path:
    """The layout as a tar, the OCI archive format ``ctr images import`` reads."""
    with tarfile.open(path, "w") as tar:
        for name in ("oci-layout", "index.json"):
            tar.add(layout / name, arcname=name)
        tar.add(layout / "blobs", arcname="blobs")
    return path
