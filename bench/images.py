"""Images for the benchmark, made of fresh bytes on every run.

skopeo keeps a blob-info cache (/var/lib/containers/cache) and skips blobs it has pushed to a
registry before, so every timed push uses bytes no client has seen. Layers are gzip streams
at level 0 (stored blocks): they carry the gzip magic, so skopeo passes them through as
already compressed instead of spending the run compressing, and they are incompressible.

Fresh bytes come from a 64 MiB ``os.urandom`` pool per process, read at offsets that differ
per chunk and per call: far cheaper than ``os.urandom`` for gigabytes (about 0.2 GB/s here),
unique per run, and never the same 1 MiB twice within a layer.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
CHUNK = MiB
_POOL_SIZE = 64 * MiB

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"


class FreshBytes:
    """A source of never-repeating byte streams for one benchmark run."""

    def __init__(self) -> None:
        self._pool = os.urandom(_POOL_SIZE)
        self._calls = 0

    def chunks(self, size: int, chunk: int = CHUNK) -> Iterator[bytes]:
        """``size`` bytes in pieces of ``chunk``; each call starts with 16 new random bytes."""
        self._calls += 1
        head = os.urandom(16)
        step = 2654435761 + self._calls * 40503
        index = 0
        left = size
        while left > 0:
            n = min(chunk, left)
            offset = (index * step + self._calls * 7919) % (_POOL_SIZE - chunk)
            piece = self._pool[offset:offset + n]
            if index == 0:
                piece = (head + piece[16:])[:n]
            yield piece
            left -= n
            index += 1

    def data(self, size: int) -> bytes:
        return b"".join(self.chunks(size))


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Blob:
    digest: str
    size: int
    media_type: str

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass
class OciImage:
    layout: Path
    tag: str
    manifest: Blob
    manifest_bytes: bytes
    config: Blob
    layers: list[Blob]

    @property
    def blob_bytes(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)

    def blob_path(self, digest: str) -> Path:
        return self.layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def _write_blob(blobs: Path, data: bytes, media_type: str) -> Blob:
    digest = sha256_digest(data)
    (blobs / digest.split(":", 1)[1]).write_bytes(data)
    return Blob(digest, len(data), media_type)


def _gzip_layer(blobs: Path, fresh: FreshBytes, size: int) -> tuple[Blob, str]:
    """A tar.gz (level 0) of one file of ``size`` fresh bytes; returns (blob, diff_id)."""
    spool = blobs / f".spool-{os.getpid()}-{os.urandom(4).hex()}"
    outer, inner = hashlib.sha256(), hashlib.sha256()
    packer = zlib.compressobj(0, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    written = 0
    header = tarfile.TarInfo(f"data/{os.urandom(8).hex()}.bin")
    header.size = size
    header.mtime = 0
    head = header.tobuf(format=tarfile.PAX_FORMAT)
    pad = b"\0" * ((-size) % 512) + b"\0" * 1024  # block padding + end-of-archive
    with open(spool, "wb") as handle:
        for piece in (head, *fresh.chunks(size), pad):
            inner.update(piece)
            packed = packer.compress(piece)
            outer.update(packed)
            handle.write(packed)
            written += len(packed)
        packed = packer.flush()
        outer.update(packed)
        handle.write(packed)
        written += len(packed)
    digest = "sha256:" + outer.hexdigest()
    os.replace(spool, blobs / digest.split(":", 1)[1])
    return Blob(digest, written, OCI_LAYER_GZIP), "sha256:" + inner.hexdigest()


def oci_image(layout: Path, fresh: FreshBytes, layer_sizes: list[int], tag: str = "v1") -> OciImage:
    """An OCI layout (for ``skopeo copy oci:DIR:tag``) with one layer per size."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    made = [_gzip_layer(blobs, fresh, size) for size in layer_sizes]
    config_doc = {
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Labels": {"bench.run": os.urandom(8).hex()}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in made]},
    }
    config = _write_blob(blobs, json.dumps(config_doc).encode(), OCI_CONFIG)
    manifest_doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": config.descriptor(),
                    "layers": [blob.descriptor() for blob, _ in made]}
    manifest_bytes = json.dumps(manifest_doc).encode()
    manifest = _write_blob(blobs, manifest_bytes, OCI_MANIFEST)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    entry = {**manifest.descriptor(), "annotations": {REF_NAME: tag}}
    (layout / "index.json").write_text(json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}))
    return OciImage(layout, tag, manifest, manifest_bytes, config, [blob for blob, _ in made])


def docker_archive(path: Path, fresh: FreshBytes, layer_sizes: list[int], repo_tag: str) -> Path:
    """A ``docker save`` tar (uncompressed layers) for ``docker load``."""
    work = path.with_suffix(".parts")
    work.mkdir(parents=True, exist_ok=True)
    diff_ids = []
    with tarfile.open(path, "w") as archive:
        for size in layer_sizes:
            layer = work / "layer.tar"
            with tarfile.open(layer, "w") as tar:
                info = tarfile.TarInfo(f"data/{os.urandom(8).hex()}.bin")
                info.size = size
                tar.addfile(info, io.BytesIO(fresh.data(size)))
            digest = hashlib.sha256(layer.read_bytes()).hexdigest()
            diff_ids.append("sha256:" + digest)
            archive.add(layer, arcname=f"{digest}/layer.tar")
            layer.unlink()
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
            "config": {"Labels": {"bench.run": os.urandom(8).hex()}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        (work / config_name).write_bytes(config)
        archive.add(work / config_name, arcname=config_name)
        manifest = [{"Config": config_name, "RepoTags": [repo_tag],
                     "Layers": [f"{d.split(':', 1)[1]}/layer.tar" for d in diff_ids]}]
        (work / "manifest.json").write_text(json.dumps(manifest))
        archive.add(work / "manifest.json", arcname="manifest.json")
    return path
