"""A pull must never publish: pull-through fills write with the gateway's own identity, and
in ECR Public what is written the whole internet reads. A route of ``upstream_kind:
ecr-public`` with an ``upstream`` (or the ``public.ecr.aws`` mirror with one) would turn any
caller's pull, a pull-only user's or an anonymous one's, into CreateRepository and PutImage in
the account's public registry, with images the upstream served to the gateway's credentials.

The attacker is ``reader``, allowed only to pull ``pub/**``; the upstream is a real
distribution registry holding a private image.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from bench.services import ReferenceRegistry
from tests.integration.auth.helpers import basic, write_htpasswd
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient

READER = basic("reader", "reader-pw")


def _config(emulator_url: str, hub_url: str, htpasswd: Path) -> dict[str, object]:
    return {
        "auth": {"mode": "htpasswd", "htpasswd_file": str(htpasswd), "rules": [
            {"repository": "pub/**", "users": ["reader"], "actions": ["pull"]}]},
        "routes": [{"prefix": "pub", "upstream_kind": "ecr-public",
                    "registry_url": emulator_url, "create_on_push": False,
                    "upstream": {"url": hub_url}},
                   {"prefix": ""}],
    }


def _check_config(tmp_path: Path, config: dict[str, object]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(path),
                           "--skip-file-checks"], capture_output=True, text=True, check=False)


async def test_a_pull_through_route_into_ecr_public_is_refused(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    hub = ReferenceRegistry(tmp_path / "hub").start()
    try:
        async with aiohttp.ClientSession() as http:
            await OciClient(http, hub.url).push_image("internal/secret", "v1",
                                                      [b"private layer" * 100])
        htpasswd = write_htpasswd(tmp_path / "htpasswd", {"reader": "reader-pw"})
        config = _config(upstream.url, hub.url, htpasswd)
        checked = _check_config(tmp_path, config)
        if checked.returncode == 0:
            # Loaded: then a reader's pull must not have published anything.
            with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
                async with aiohttp.ClientSession() as http, http.get(
                        f"{gw.url}/v2/pub/internal/secret/manifests/v1",
                        headers={**READER, "Accept": "application/vnd.oci.image.manifest"
                                                     ".v1+json"}) as r:
                    status = r.status
                for _ in range(100):  # the fill goes on after the answer
                    if any(e["action"].endswith("PutImage") for e in upstream.requests()):
                        break
                    await asyncio.sleep(0.1)
            writes = [e["action"] for e in upstream.requests()
                      if e.get("repository") == "internal/secret"
                      and e["action"].rpartition(":")[2] in (
                          "CreateRepository", "PutImage", "CompleteLayerUpload")]
            pytest.fail(f"a pull-through route into ECR Public loaded; a pull-only user's "
                        f"pull answered {status} and made the gateway call {writes} in the "
                        f"account's public registry")
        assert checked.returncode == 2, checked
        assert "routes[0].upstream" in checked.stderr and "ECR Public" in checked.stderr, \
            checked.stderr
    finally:
        hub.stop()


async def test_the_public_mirror_with_an_upstream_is_refused(tmp_path: Path) -> None:
    mirror = {"repository_prefix": "cache", "upstream": {"url": "https://public.ecr.aws"}}
    config: dict[str, object] = {"mirrors": {"public.ecr.aws": mirror}}
    checked = _check_config(tmp_path, config)
    assert checked.returncode == 2, checked
    assert "mirrors.public.ecr.aws.upstream" in checked.stderr, checked.stderr
