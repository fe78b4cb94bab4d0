"""Fixtures for end-to-end tests: real clients in front of a real gateway and emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.clients import Containerd, Docker, Dockerd, Skopeo
from tests.support.gateway import GatewayProcess


@pytest.fixture
def skopeo(tmp_path: Path) -> Skopeo:
    """skopeo with credentials of its own (REGISTRY_AUTH_FILE in the test's folder)."""
    return Skopeo(tmp_path / "skopeo")


@pytest.fixture(scope="module")
def dockerd(gateway: GatewayProcess) -> Iterator[Dockerd]:
    """One private dockerd per module, with the module's gateway as an insecure registry."""
    daemon = Dockerd(insecure_registries=[gateway.host])
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def docker(dockerd: Dockerd, tmp_path: Path) -> Docker:
    """The docker CLI on the module's daemon, with a DOCKER_CONFIG of the test's own."""
    return dockerd.client(tmp_path / "docker-config")


@pytest.fixture
def containerd() -> Iterator[Callable[[], Containerd]]:
    """Start as many private containerd daemons as a test needs; all stop at teardown."""
    started: list[Containerd] = []

    def start() -> Containerd:
        daemon = Containerd().start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()

