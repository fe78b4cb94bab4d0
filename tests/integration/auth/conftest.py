"""A gateway with htpasswd users and team rules, on the module's emulator.

Users: alice and ci-a (team-a: everything in team-a/, and the catalog), carol (team-b),
viewer (pulls team-a/ only), admin (the catalog and pulls everywhere), bob (no team).
Everyone authenticated pulls and pushes public/*; callers without credentials only pull it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.auth.helpers import write_htpasswd
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

PASSWORDS = {"alice": "alice-pw", "ci-a": "ci-a-pw", "carol": "carol-pw",
             "viewer": "viewer-pw", "admin": "admin-pw", "bob": "bob-pw",
             "victim": "victim-pw"}

RULES: list[dict[str, Any]] = [
    {"repository": "team-a/**", "groups": ["team-a"],
     "actions": ["pull", "push", "delete", "catalog"]},
    {"repository": "team-a/**", "users": ["viewer"], "actions": ["pull"]},
    {"repository": "team-b/**", "groups": ["team-b"], "actions": ["pull", "push", "delete"]},
    {"repository": "public/*", "users": ["*"], "anonymous": True, "actions": ["pull", "push"]},
    {"repository": "**", "users": ["admin"], "actions": ["pull", "catalog"]},
]
GROUPS = {"team-a": ["alice", "ci-a"], "team-b": ["carol"]}


def htpasswd_auth(path: Path, **extra: Any) -> dict[str, Any]:
    return {"mode": "htpasswd", "htpasswd_file": str(path), "groups": GROUPS, "rules": RULES,
            "rate_limit": {"max_failures_per_user": 5, "max_failures_per_address": 1000},
            **extra}


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_htpasswd(tmp_path_factory.mktemp("users") / "htpasswd", PASSWORDS)


@pytest.fixture(scope="module")
def authgw(upstream: EmulatorProcess, htpasswd: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway with htpasswd auth and the team rules (plain HTTP on loopback)."""
    config = {"auth": htpasswd_auth(htpasswd)}
    with GatewayProcess(tmp_path_factory.mktemp("gw"), config,
                        upstream_url=upstream.url) as gateway:
        yield gateway


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client
