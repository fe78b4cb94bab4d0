"""``ecr-gateway demo-image``: the push it suggests goes where the gateway listens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def _demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECR_GATEWAY_")}
    return subprocess.run([sys.executable, "-m", "gateway.cli", "demo-image", "demo", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize(("config", "expected"), [
    # the walkthrough's gateway: another port, logins
    ({"listen": "127.0.0.1:5001", "auth": {"mode": "htpasswd", "htpasswd_file": "htpasswd",
                                           "rules": [{"repository": "**", "users": ["*"],
                                                      "actions": ["push"]}]}},
     ["skopeo login --tls-verify=false 127.0.0.1:5001",
      "skopeo copy --dest-tls-verify=false oci:demo:v1 docker://127.0.0.1:5001/demo/app:v1"
      "    # or a repository the access rules let you push to"]),
    # every address of the machine: a client here connects to its loopback
    ({"listen": "0.0.0.0:6000"},
     ["skopeo copy --dest-tls-verify=false oci:demo:v1 docker://127.0.0.1:6000/demo/app:v1"]),
])
def test_the_suggested_push_goes_to_the_configured_address(
        tmp_path: Path, config: dict[str, object], expected: list[str]) -> None:
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    result = _demo(tmp_path, "--config", "gateway.yaml")
    assert result.returncode == 0, result.stderr
    assert [line.strip() for line in result.stdout.splitlines()[1:]] == expected, \
        result.stdout
    assert (tmp_path / "demo" / "index.json").is_file()


def test_listen_names_the_address_and_the_default_says_how(tmp_path: Path) -> None:
    given = _demo(tmp_path, "--listen", "127.0.0.1:5002")
    assert "docker://127.0.0.1:5002/demo/app:v1" in given.stdout, given.stdout
    assert "5000" not in given.stdout
    default = _demo(tmp_path)
    assert "docker://127.0.0.1:5000/demo/app:v1" in default.stdout, default.stdout
    assert "--config FILE or --listen HOST:PORT" in default.stdout


def test_a_configuration_it_cannot_read_writes_nothing(tmp_path: Path) -> None:
    result = _demo(tmp_path, "--config", "missing.yaml")
    assert result.returncode == 2
    assert "cannot read missing.yaml" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "demo").exists()
