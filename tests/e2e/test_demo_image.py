"""The quick start's image: ``ecr-gateway demo-image`` writes an OCI layout that skopeo pushes
through the gateway and a real dockerd pulls, as the README's quick start does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.tools import demo_image
from tests.support.clients import Docker, Skopeo
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.e2e


def test_demo_image_is_pushed_by_skopeo_and_pulled_by_docker(
        gateway: GatewayProcess, skopeo: Skopeo, docker: Docker, tmp_path: Path) -> None:
    layout = tmp_path / "demo"
    made = subprocess.run([sys.executable, "-m", "gateway.cli", "demo-image", str(layout)],
                          capture_output=True, text=True, timeout=60, check=True)
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    assert digest in made.stdout
    assert demo_image.write(tmp_path / "again") == digest  # the same bytes every time
    ref = f"{gateway.host}/demo/app:v1"
    skopeo.copy(f"oci:{layout}:v1", f"docker://{ref}")
    docker("pull", ref)
    inspected = json.loads(docker("image", "inspect", ref).stdout)[0]
    assert inspected["RepoDigests"] == [f"{gateway.host}/demo/app@{digest}"]
