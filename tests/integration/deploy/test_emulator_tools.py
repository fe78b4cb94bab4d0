"""The production container image leaves the ECR emulator's fault injection and control
endpoints out (deploy/Dockerfile, EMULATOR_TOOLS): the embedded default of ``ecr-gateway
serve`` must run without ``ecr_emulator/faults.py`` and ``admin.py``, and asking for them
must fail clearly. The packages are copied without those files to a folder that comes first
on the path (``python -m`` imports from its working folder), as the image holds them; its
``sitecustomize`` drops the editable install's finder, which would otherwise find the
missing modules in the source tree (the image's install is not editable)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.emulator import ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, digest_of

ROOT = Path(__file__).resolve().parents[3]
TOOLS = ("ecr_emulator/faults.py", "ecr_emulator/admin.py")
NOT_EDITABLE = """import sys
sys.meta_path[:] = [f for f in sys.meta_path
                    if not getattr(f, "__module__", "").startswith("__editable__")]
"""


@pytest.fixture
def without_tools(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    for package in ("gateway", "ecr_emulator", "ecr_model"):
        shutil.copytree(ROOT / package, site / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for tool in TOOLS:
        (site / tool).unlink()
    (site / "sitecustomize.py").write_text(NOT_EDITABLE)
    return site


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site)}


def _run(site: Path, *args: str, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=site, env=env or _env(site),
                          capture_output=True, text=True, timeout=60)


def test_the_copy_is_what_runs(without_tools: Path) -> None:
    found = _run(without_tools, "-c", "import importlib.util, ecr_emulator, gateway; "
                 "print(ecr_emulator.__file__); print(gateway.__file__); "
                 "print(importlib.util.find_spec('ecr_emulator.admin'))")
    assert found.stdout.split() == [str(without_tools / "ecr_emulator" / "__init__.py"),
                                    str(without_tools / "gateway" / "__init__.py"), "None"]


async def test_serve_with_its_embedded_emulator_runs_without_the_tools(
        without_tools: Path, tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "gw", env={"PYTHONPATH": str(without_tools)},
                             cwd=without_tools)
    with gateway:
        layer = os.urandom(200_000)
        async with aiohttp.ClientSession() as session:
            client = OciClient(session, gateway.url)
            await client.push_image("lean/app", "v1", [layer])
            assert await client.get_blob("lean/app", digest_of(layer)) == layer
    assert not any("Traceback" in line for line in gateway.log_lines), gateway.log_lines


def test_asking_for_the_tools_fails_clearly(without_tools: Path, tmp_path: Path) -> None:
    for args, env in ((["--admin"], None),
                      ([], {**_env(without_tools), "ECR_EMULATOR_FAULTS": "[]"})):
        result = _run(without_tools, "-m", "ecr_emulator", "--listen", "127.0.0.1:0",
                      "--data-dir", str(tmp_path / "ecr"), *args, env=env)
        assert result.returncode == 2, result.stderr
        assert "EMULATOR_TOOLS=1" in result.stderr and "Traceback" not in result.stderr


async def test_the_emulator_alone_runs_without_the_tools(without_tools: Path,
                                                         tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "ecr_emulator", "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "ecr")],
        cwd=without_tools, env=_env(without_tools), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:"), url
        async with ecr_client(url) as ecr:
            await ecr.create_repository(repositoryName="lean/app")
            assert [r["repositoryName"] for r in
                    (await ecr.describe_repositories())["repositories"]] == ["lean/app"]
        async with aiohttp.ClientSession() as session, \
                session.get(f"{url}/_emulator/requests") as r:
            assert r.status == 404  # the control endpoints are off
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert process.returncode == 0
