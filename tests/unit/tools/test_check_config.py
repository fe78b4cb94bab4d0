"""``ecr-gateway check-config``: validation, the effective configuration, secrets masked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.config import load_config
from gateway.tools.check_config import effective, secret_values

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line, in a process of its own."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def test_prints_the_effective_configuration_with_secrets_masked(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "upstream": {"mode": "aws", "access_key_id": "AKIDEXAMPLE",
                     "secret_access_key": SECRET, "session_token": "FwoGZXIvYXdzEXAMPLE"},
        "state": {"backend": "redis", "redis_url": "redis://:hunter2hunter2@redis:6379/0"},
        "routes": [{"prefix": "ci", "repository_prefix": "ci"}]}))
    result = _run("check-config", str(config),
                  env={"ECR_GATEWAY_BLOBS__MODE": "proxy"})
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout and "FwoGZXIvYXdzEXAMPLE" not in result.stdout
    assert "hunter2hunter2" not in result.stdout
    shown = yaml.safe_load(result.stdout)
    assert shown["upstream"]["secret_access_key"] == "***"
    assert shown["upstream"]["access_key_id"] == "AKIDEXAMPLE"  # an id, not a secret
    assert shown["state"]["redis_url"] == "redis://:***@redis:6379/0"
    assert shown["blobs"]["mode"] == "proxy"  # the environment's override is included
    # The catch-all route the gateway adds is part of what it will really use.
    assert [r["prefix"] for r in shown["routes"]] == ["ci", ""]


def test_names_the_bad_key_and_fails(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("state:\n  backend: memcached\n")
    result = _run("check-config", str(config))
    assert result.returncode == 2
    assert "state.backend" in result.stderr and "local, redis" in result.stderr
    config.write_text("state:\n  backend: redis\n")
    assert main(["check-config", str(config)]) == 2
    assert "state.redis_url" in capsys.readouterr().err


def test_refuses_what_serve_would_refuse(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("listen: 0.0.0.0:5000\nauth:\n  mode: none\n")
    assert main(["check-config", str(config)]) == 2
    assert "auth.mode" in capsys.readouterr().err


def test_example_configuration_and_every_deploy_configuration_are_valid(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("ECR_GATEWAY_")]:
        monkeypatch.delenv(name)
    root = Path(__file__).resolve().parents[3]
    files = [root / "config.example.yaml",
             *sorted((root / "deploy").rglob("config.yaml"))]
    assert len(files) >= 5  # the example, the image's default, the three overlays
    for path in files:
        code = main(["check-config", str(path)])
        out = capsys.readouterr()
        assert code == 0, (path, out.err)
        assert yaml.safe_load(out.out)["listen"]


def test_secret_values_feed_the_log_redaction() -> None:
    config = load_config(None, environ={
        "ECR_GATEWAY_UPSTREAM__SECRET_ACCESS_KEY": SECRET,
        "ECR_GATEWAY_STATE__REDIS_URL": "rediss://user:pa55word@r:6380/1"})
    assert set(secret_values(config)) == {SECRET, "pa55word"}
    assert effective(config)["upstream"]["secret_access_key"] == "***"
