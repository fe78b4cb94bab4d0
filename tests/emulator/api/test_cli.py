"""``ecr-gateway emulator`` as a command: ready line, signals, arguments, the AWS CLI."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.support.emulator import EmulatorProcess

ROOT = Path(__file__).resolve().parents[3]


def launch(data_dir: Path, *extra: str, listen: str = "127.0.0.1:0") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "emulator", "--listen", listen,
         "--data-dir", str(data_dir), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_ready_line_and_graceful_stop(tmp_path: Path, signum: int) -> None:
    process = launch(tmp_path / "ecr", "--account-id", "210987654321", "--region", "eu-west-3")
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("ECR emulator listening on http://127.0.0.1:")
    port = int(line.strip().rsplit(":", 1)[1])
    assert line == f"ECR emulator listening on http://127.0.0.1:{port}\n" and port > 0
    process.send_signal(signum)
    stdout, _ = process.communicate(timeout=15)
    assert process.returncode == 0
    assert stdout == ""  # exactly one line on stdout
    assert (tmp_path / "ecr" / "ecr.sqlite3").exists()


def test_bad_listen_address(tmp_path: Path) -> None:
    process = launch(tmp_path / "ecr", listen="nonsense")
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "HOST:PORT" in stderr


def test_port_in_use(tmp_path: Path) -> None:
    with EmulatorProcess(tmp_path / "one") as first:
        process = launch(tmp_path / "two", listen=f"127.0.0.1:{first.port}")
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 1
        assert "ecr-gateway emulator:" in stderr


def test_restart_keeps_the_port(tmp_path: Path) -> None:
    emulator = EmulatorProcess(tmp_path / "ecr")
    url = emulator.start()
    try:
        emulator.kill9()
        assert emulator.start() == url
        assert emulator.restart() == url
    finally:
        assert emulator.stop() == 0


def aws(emulator: EmulatorProcess, *args: str) -> dict[str, object]:
    env = {**os.environ, **emulator.aws_env("AKIDCLI"),
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_PAGER": ""}
    result = subprocess.run(["aws", "--endpoint-url", emulator.url, "--output", "json", "ecr",
                             *args], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip().startswith("{") else {
        "text": result.stdout}


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
def test_aws_cli(shared_emulator: EmulatorProcess) -> None:
    repo = f"cli/{int(time.time() * 1000)}"
    created = aws(shared_emulator, "create-repository", "--repository-name", repo)
    assert created["repository"]["repositoryName"] == repo  # type: ignore[index]
    described = aws(shared_emulator, "describe-repositories", "--repository-names", repo)
    assert len(described["repositories"]) == 1  # type: ignore[arg-type]
    upload = aws(shared_emulator, "initiate-layer-upload", "--repository-name", repo)
    assert upload["partSize"] == 10 * 1024 * 1024
    token = aws(shared_emulator, "get-authorization-token")
    data = token["authorizationData"][0]  # type: ignore[index]
    assert base64.b64decode(data["authorizationToken"]).startswith(b"AWS:")
    password = aws(shared_emulator, "get-login-password")["text"]
    assert str(password).strip()
    assert [e["access_key_id"] for e in shared_emulator.requests("CreateRepository")
            if e["repository"] == repo] == ["AKIDCLI"]


def _help(command: list[str]) -> str:
    """The option lines of a command's --help (its usage line names the command)."""
    out = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    return out[out.index("options:"):]


def test_ecr_emulator_command_is_ecr_gateway_emulator(tmp_path: Path) -> None:
    """``ecr-emulator`` (the console entry pyproject.toml declares) takes exactly the options
    of ``ecr-gateway emulator`` and runs the same server."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["ecr-emulator"] == "ecr_emulator.cli:main"
    command = shutil.which("ecr-emulator", path=str(Path(sys.executable).parent))
    assert command is not None, "ecr-emulator is not installed next to this Python"
    assert _help([command]) == _help([sys.executable, "-m", "gateway.cli", "emulator"])
    process = subprocess.Popen([command, "--listen", "127.0.0.1:0", "--data-dir",
                                str(tmp_path / "ecr"), "--region", "eu-west-3"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("ECR emulator listening on http://127.0.0.1:")
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=15)
    assert process.returncode == 0
