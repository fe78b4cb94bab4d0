"""A real dockerd pushes a 3-blob image through the gateway and pulls it back intact."""

from __future__ import annotations

import filecmp
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import expected_parts, get_manifest
from tests.support.clients import Docker
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.images import docker_archive, read_docker_save

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
ECR_PART_SIZE = 10 * MiB  # the emulator's partSize (ECR's documented default)
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def _push_log(gateway: GatewayProcess, repo: str, timeout: float = 5.0
              ) -> list[dict[str, Any]]:
    """The gateway's access-log entries for ``repo`` up to the manifest PUT that ends a
    push (log lines arrive from the gateway's stderr a moment after the response)."""
    deadline = time.monotonic() + timeout
    while True:
        entries = [e for e in gateway.access_log() if e.get("repository") == repo]
        if any(e["route"] == "end-3" and e["method"] == "PUT" for e in entries):
            return entries
        assert time.monotonic() < deadline, f"no manifest PUT logged for {repo}: {entries}"
        time.sleep(0.1)


def test_docker_push_pull_save_round_trip(gateway: GatewayProcess, upstream: EmulatorProcess,
                                          docker: Docker, repo: str, tmp_path: Path) -> None:
    """docker load → push → rmi → pull → save gives back the very same layer tars.

    docker sends each blob as one PATCH without Content-Range and then PUT ?digest=, so the
    gzip of the 30 MiB random layer (a bit over 30 MiB) reaches ECR as 10 MiB parts plus a
    final short part, cut by the gateway while the body streams in.
    """
    ref = f"{gateway.host}/{repo}:v1"
    archive = docker_archive(tmp_path / "image.tar", [30 * MiB, 1536], ref)

    loaded = docker("load", "-i", str(archive.path))
    assert ref in loaded.stdout, loaded.stdout
    local = json.loads(docker("image", "inspect", ref).stdout)[0]
    assert local["Id"] == archive.image_id
    assert local["RootFS"]["Layers"] == archive.diff_ids

    pushed = docker("push", ref)
    found = re.search(r"v1: digest: (sha256:[0-9a-f]{64}) size: (\d+)", pushed.stdout)
    assert found, pushed.stdout
    manifest_digest = found[1]

    # What the registry holds: docker's v2s2 manifest over the same config, gzip layers.
    content_type, digest, body = get_manifest(gateway.url, repo, "v1")
    assert (content_type, digest) == (DOCKER_MANIFEST, manifest_digest)
    assert len(body) == int(found[2])
    manifest = json.loads(body)
    assert manifest["config"]["digest"] == archive.config.digest
    assert len(manifest["layers"]) == 2
    sizes = [manifest["config"]["size"], *(layer["size"] for layer in manifest["layers"])]
    assert manifest["layers"][0]["size"] > 30 * MiB

    # One PATCH per blob, no Content-Range: the gateway cut the bodies into ECR parts.
    entries = _push_log(gateway, repo)
    patches = [e for e in entries if e["method"] == "PATCH" and e["route"] == "end-5"]
    puts = [e for e in entries if e["method"] == "PUT" and e["route"] == "end-5"]
    assert len(patches) == 3 and all(e["status"] == 202 for e in patches), patches
    assert len(puts) == 3 and all(e["status"] == 201 for e in puts), puts
    calls = [c for c in upstream.requests() if c.get("repository") == repo]
    parts = [c for c in calls if c["action"] == "UploadLayerPart"]
    assert all(c["outcome"] == "ok" for c in parts), parts
    assert len(parts) == expected_parts(sizes, ECR_PART_SIZE) == 6
    completes = [c for c in calls if c["action"] == "CompleteLayerUpload"]
    assert len(completes) == 3 and all(c["outcome"] == "ok" for c in completes), completes
    # The manifest's descriptors are checked against sizes the uploads taught the gateway:
    # no layer check beyond those docker's HEADs asked for.
    heads = [e for e in entries if e["method"] == "HEAD" and e["route"] == "end-2"]
    checks = [c for c in calls if c["action"] == "BatchCheckLayerAvailability"]
    assert len(checks) <= len(heads), (checks, heads)
    assert [c["action"] for c in calls].count("PutImage") == 1

    docker("rmi", ref)
    gone = docker("image", "inspect", ref, check=False)
    assert gone.returncode != 0

    pulled = docker("pull", ref)
    assert f"Digest: {manifest_digest}" in pulled.stdout, pulled.stdout
    again = json.loads(docker("image", "inspect", ref).stdout)[0]
    assert again["Id"] == archive.image_id
    assert again["RepoDigests"] == [f"{gateway.host}/{repo}@{manifest_digest}"]

    saved = tmp_path / "saved.tar"
    docker("save", "-o", str(saved), ref)
    entry, layer_digests, config_digest = read_docker_save(saved, tmp_path / "saved")
    assert layer_digests == archive.diff_ids
    assert config_digest == archive.config.digest
    for name, original in zip(entry["Layers"], archive.layers, strict=True):
        assert filecmp.cmp(tmp_path / "saved" / name, original.path, shallow=False), name
