"""Fixtures for the emulator's own tests: emulator processes and aiobotocore clients."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.emulator import EmulatorProcess, ecr_client


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorProcess]:
    """A fresh emulator on an empty data dir under tmp_path, default limits."""
    with EmulatorProcess(tmp_path / "ecr") as emu:
        yield emu


@pytest.fixture(scope="module")
def shared_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """One emulator per test module with default limits; tests use distinct repositories."""
    with EmulatorProcess(tmp_path_factory.mktemp("ecr")) as emu:
        yield emu


@pytest.fixture
async def ecr(shared_emulator: EmulatorProcess) -> AsyncIterator[Any]:
    """A client of the shared emulator that does not retry (errors surface at once)."""
    async with ecr_client(shared_emulator.url, retries={"total_max_attempts": 1}) as client:
        yield client


@pytest.fixture
def repo() -> str:
    return f"emu/{uuid.uuid4().hex[:12]}"
