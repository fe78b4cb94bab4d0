"""``ecr-gateway --help`` and ``--version``, run as the real command."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

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
