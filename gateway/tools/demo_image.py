"""``ecr-gateway demo-image DIR``: write a tiny OCI image layout (one layer holding
``/hello.txt``, tagged ``v1``) to push with ``skopeo copy oci:DIR:v1 docker://…``, so the
quick start needs no container daemon and no download."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _layer() -> tuple[bytes, str]:
    """(gzipped layer, sha256 of the tar), byte-for-byte the same on every run."""
    text = b"hello from ecr-gateway\n"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mode, info.mtime = len(text), 0o644, 0
        tar.addfile(info, io.BytesIO(text))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def _put(blobs: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write(folder: Path, tag: str = "v1") -> str:
    """Write the layout; returns the manifest digest."""
    blobs = folder / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    layer, diff_id = _layer()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                           "config": {"mediaType": CONFIG, **_put(blobs, config)},
                           "layers": [{"mediaType": LAYER, **_put(blobs, layer)}]}).encode()
    described = {"mediaType": MANIFEST, **_put(blobs, manifest),
                 "annotations": {"org.opencontainers.image.ref.name": tag}}
    (folder / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (folder / "index.json").write_text(json.dumps({"schemaVersion": 2,
                                                   "manifests": [described]}))
    return str(described["digest"])


def run(folder: str) -> int:
    try:
        digest = write(Path(folder))
    except OSError as exc:
        print(f"ecr-gateway: cannot write {folder}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {folder}: an OCI image layout, tag v1 ({digest}); push it with\n"
          f"  skopeo copy --dest-tls-verify=false oci:{folder}:v1 "
          f"docker://127.0.0.1:5000/demo/app:v1")
    return 0
