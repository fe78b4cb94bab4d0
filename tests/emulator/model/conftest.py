"""One emulator for the modules of this folder (distinct repository names), and upstream
registries (CNCF distribution, Debian's ``docker-registry``) for pull through cache."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.services import ReferenceRegistry, free_port
from tests.conftest import require_tool
from tests.support.emulator import EmulatorProcess, ecr_client

USER, PASSWORD = "puller", "s3cret-token"


class Registry(ReferenceRegistry):
    """``docker-registry serve`` on a loopback port, optionally behind htpasswd auth."""

    def __init__(self, root: Path, htpasswd: Path | None = None) -> None:
        super().__init__(root)
        self.htpasswd = htpasswd

    def start(self) -> Registry:
        if self.htpasswd is None:
            super().start()
            return self
        # /v2/ answers 401 here, so readiness is any HTTP answer.
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        (self.root / "config.yml").write_text(yaml.safe_dump(self.config()))
        with open(self.root / "registry.log", "wb") as log:
            self.process = subprocess.Popen([self.binary, "serve", str(self.root / "config.yml")],
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/v2/", timeout=2).close()
                return self
            except urllib.error.HTTPError:
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)

    def config(self) -> dict[str, Any]:
        config = super().config()
        if self.htpasswd is not None:
            config["auth"] = {"htpasswd": {"realm": "upstream", "path": str(self.htpasswd)}}
        return config


@pytest.fixture(scope="package")
def model_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with EmulatorProcess(tmp_path_factory.mktemp("model"),
                         env={"ECR_EMULATOR_LIFECYCLE_INTERVAL": "0"}) as emu:
        yield emu


@pytest.fixture
async def ecr(model_emulator: EmulatorProcess) -> AsyncIterator[Any]:
    async with ecr_client(model_emulator.url, retries={"total_max_attempts": 1}) as client:
        yield client


@pytest.fixture
def repo() -> str:
    return f"model/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="package")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    require_tool("docker-registry")
    registry = Registry(tmp_path_factory.mktemp("upstream")).start()
    yield registry
    registry.stop()


@pytest.fixture(scope="package")
def private_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry that answers only ``USER`` / ``PASSWORD`` (HTTP Basic, bcrypt htpasswd)."""
    require_tool("docker-registry")
    htpasswd = require_tool("htpasswd")
    root = tmp_path_factory.mktemp("private-upstream")
    line = subprocess.run([htpasswd, "-Bbn", USER, PASSWORD], capture_output=True, text=True,
                          check=True).stdout.strip()
    (root / "htpasswd").write_text(line + "\n")
    registry = Registry(root, root / "htpasswd").start()
    yield registry
    registry.stop()
