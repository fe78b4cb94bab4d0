"""What the attacker tests share: a client session, and root for the tests whose attacker is
another local user."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.conftest import IN_CI
from tests.support.gateway import GatewayProcess

ATTACKER_UID = 65534  # nobody: the other local user


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def as_root() -> None:
    """Files and folders of another user need root to be made; under CI that is a failure,
    not a skip."""
    if os.geteuid() != 0:
        message = "files and folders of another user need root to be made"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def refused_start(gateway: GatewayProcess, *said: str) -> bool:
    """Start ``gateway``; True if it refused (exit code 2, each of ``said`` in its log, no
    traceback), False if it started (the caller plays the attacker, then stops it)."""
    try:
        gateway.start()
    except RuntimeError:
        log = "\n".join(gateway.log_lines)
        assert gateway.process is not None and gateway.process.returncode == 2, log
        for words in said:
            assert words in log, log
        assert "Traceback" not in log, log
        return True
    return False
