"""Shared fixtures: a real ECR emulator process and a real gateway process in front of it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

pytest_plugins = ["tests.support.failure_report"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="run the long forms of the reliability tests (full soak, longer fuzz); "
                          "also RELIABILITY_LONG=1")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--long", default=False):
        os.environ["RELIABILITY_LONG"] = "1"  # read where the example counts are set


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """One emulator per test module (tests use distinct repository names)."""
    emulator = EmulatorProcess(tmp_path_factory.mktemp("emulator"))
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def gateway(upstream: EmulatorProcess,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway on the module's emulator, default configuration."""
    with GatewayProcess(tmp_path_factory.mktemp("gateway"), upstream_url=upstream.url) as gw:
        yield gw


@pytest.fixture
def repo() -> str:
    """A repository name no other test uses."""
    return f"test/{uuid.uuid4().hex[:12]}"


def require_tool(name: str) -> str:
    """The path of a real client; under CI a missing client fails the test, never skips it."""
    import shutil

    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (see scripts/install-test-deps.sh)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
