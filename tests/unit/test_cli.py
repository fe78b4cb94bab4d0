"""``ecr-gateway --help`` and ``--version``, run as the real command."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from gateway.config import load_config

COMMANDS = ("serve", "emulator", "check-config", "iam-policy", "doctor", "sync", "demo-image")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "COLUMNS": "80"},
                          check=False)


def test_help_lists_every_command_on_one_line_each() -> None:
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for command in COMMANDS:
        own = [line for line in lines if line.split()[:1] == [command]]
        assert len(own) == 1, (command, result.stdout)
        assert len(own[0].split()) > 2, f"{command} has no summary on its line: {own[0]!r}"
    assert "``" not in result.stdout and "--version" in result.stdout


def test_version_prints_the_installed_version() -> None:
    result = _run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ecr-gateway {metadata.version('ecr-gateway')}"


def test_a_value_in_the_environment_that_is_not_yaml_is_never_echoed(tmp_path: Path) -> None:
    """Containers get their settings through ECR_GATEWAY_* variables, some with credentials
    in them (a URL's password); one the YAML parser refuses (it starts with * or @, or holds
    ': ') must not be printed in the refusal, which lands in the pod's log."""
    config = tmp_path / "config.yaml"
    config.write_text("listen: 127.0.0.1:5000\n")
    for value in ("*Sup3rSecretPw", "Sup3r: Secret: Pw", "@Sup3rSecret", '"Sup3rSecret'):
        env = {**os.environ, "ECR_GATEWAY_STATE__REDIS_URL": value}
        for command in (["check-config", str(config)],
                        ["serve", "--config", str(config), "--listen", "127.0.0.1:0",
                         "--data-dir", str(tmp_path / "data")]):
            result = subprocess.run([sys.executable, "-m", "gateway.cli", *command],
                                    capture_output=True, text=True, env=env, timeout=60,
                                    check=False)
            assert result.returncode == 2, (command, result)
            assert "ECR_GATEWAY_STATE__REDIS_URL" in result.stderr
            assert "Sup3r" not in result.stderr + result.stdout, (value, result.stderr)


def test_credentials_in_the_environment_are_taken_as_they_are() -> None:
    """AWS keys are any text: not YAML, which would cut " #tail" off as a comment, refuse
    "*..." as an alias, or read "0123" as a number."""
    for secret in ("*Sup3rSecretPw", "Secret #tail", "Sup3r: Secret: Pw", "0123", "@x"):
        loaded = load_config(None, environ={
            "ECR_GATEWAY_UPSTREAM__MODE": "aws",
            "ECR_GATEWAY_UPSTREAM__ACCESS_KEY_ID": secret,
            "ECR_GATEWAY_UPSTREAM__SECRET_ACCESS_KEY": secret,
            "ECR_GATEWAY_UPSTREAM__SESSION_TOKEN": secret})
        upstream = loaded.upstream
        assert (upstream.access_key_id, upstream.secret_access_key,
                upstream.session_token) == (secret, secret, secret)


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    """`ecr-gateway iam-policy | head -5`: the pipe is closed before the policy is written,
    which ends the command quietly, as `cat` would, not with a BrokenPipeError traceback."""
    for command in (["iam-policy"], ["config-schema"]):
        process = subprocess.Popen([sys.executable, "-m", "gateway.cli", *command],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()  # long before the interpreter has started and written
        errors = process.stderr.read().decode()
        assert process.wait(timeout=60) == 1, errors
        assert "Traceback" not in errors and "BrokenPipe" not in errors, errors
