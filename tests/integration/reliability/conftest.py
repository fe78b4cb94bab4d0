"""Reliability tests: faults, restarts, outages, limits and hostile input.

``--long`` (or ``RELIABILITY_LONG=1``) runs the long forms: the full 300-image soak and more
fuzz examples. The default forms fit in CI.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--long", default=False)) or \
        os.environ.get("RELIABILITY_LONG", "") not in ("", "0")
