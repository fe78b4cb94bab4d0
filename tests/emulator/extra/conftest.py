"""One emulator for the modules of this folder (they use distinct repository names)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.emulator.extra.helpers import public_client
from tests.support.emulator import EmulatorProcess, ecr_client

# Lifecycle policies are applied on demand only (POST /_emulator/lifecycle/run).
ENV = {"ECR_EMULATOR_LIFECYCLE_INTERVAL": "0"}


@pytest.fixture(scope="package")
def extra_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with EmulatorProcess(tmp_path_factory.mktemp("extra"), env=ENV) as emu:
        yield emu


@pytest.fixture
async def ecr(extra_emulator: EmulatorProcess) -> AsyncIterator[Any]:
    async with ecr_client(extra_emulator.url, retries={"total_max_attempts": 1}) as client:
        yield client


@pytest.fixture
async def pub(extra_emulator: EmulatorProcess) -> AsyncIterator[Any]:
    async with public_client(extra_emulator.url) as client:
        yield client


@pytest.fixture
def repo() -> str:
    return f"extra/{uuid.uuid4().hex[:12]}"
