"""``ecr-gateway demo-image DIR``: write a tiny OCI image layout (one layer holding
``/hello.txt``, tagged ``v1``) to push with ``skopeo copy oci:DIR:v1 docker://…``, so the
quick start needs no container daemon and no download. The push it suggests goes where
``serve`` with the same ``--config``/``--listen`` (and ``ECR_GATEWAY_*`` environment)
listens."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

from gateway.config import Config, ConfigError, load_config

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


def _client_address(config: Config) -> str:
    """Where a client on this machine reaches the gateway: a wildcard address is not one
    to connect to, its loopback is."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(config.listen_host,
                                                                       config.listen_host)
    return f"[{host}]:{config.listen_port}" if ":" in host else f"{host}:{config.listen_port}"


def push_commands(config: Config, folder: str) -> list[str]:
    """The skopeo commands that push the layout to the gateway ``config`` describes."""
    address = _client_address(config)
    # Plain HTTP needs the flag; with tls the client checks the certificate as usual.
    insecure = "" if config.tls.cert_file else "--tls-verify=false "
    copy = (f"skopeo copy {insecure.replace('--', '--dest-')}oci:{folder}:v1 "
            f"docker://{address}/demo/app:v1")
    if config.auth.mode == "none":
        return [copy]
    return [f"skopeo login {insecure}{address}",
            f"{copy}    # or a repository the access rules let you push to"]


def run(folder: str, config_file: str | None = None, listen: str | None = None) -> int:
    try:
        config = load_config(config_file, overrides={"listen": listen})
    except ConfigError as exc:
        print(f"ecr-gateway: bad configuration: {exc.located()}", file=sys.stderr)
        return 2
    try:
        digest = write(Path(folder))
    except OSError as exc:
        print(f"ecr-gateway: cannot write {folder}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    where = f"the gateway of {config_file}" if config_file else f"a gateway on {config.listen}"
    lines = "".join(f"\n  {command}" for command in push_commands(config, folder))
    print(f"wrote {folder}: an OCI image layout, tag v1 ({digest}); push it to {where} "
          f"with{lines}")
    if not config_file and not listen:
        print("(a gateway listening elsewhere: ecr-gateway demo-image --config FILE or "
              "--listen HOST:PORT names it)")
    return 0
