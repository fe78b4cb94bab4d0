"""A real redis-server per module, and a way to start gateway replicas that share it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.auth.helpers import write_htpasswd
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer, SharedRedis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


def redis_state(server: SharedRedis, **extra: Any) -> dict[str, Any]:
    """A ``state`` section on ``server`` with a key prefix of its own."""
    return {"backend": "redis", "redis_url": server.url,
            "key_prefix": f"t{uuid.uuid4().hex[:8]}:", **extra}


def replica(folder: Path, upstream: EmulatorProcess, state: dict[str, Any],
            **config: Any) -> GatewayProcess:
    return GatewayProcess(folder, {"state": state, **config}, upstream_url=upstream.url)


@contextmanager
def user_replicas(root: Path, upstream: EmulatorProcess, state: dict[str, Any],
                  limits: dict[str, Any]) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two replicas sharing ``state`` with ``limits``, where alice and bob (passwords
    ``alice-pw``, ``bob-pw``) each push to ``<user>/**``."""
    users = write_htpasswd(root / "htpasswd", {"alice": "alice-pw", "bob": "bob-pw"})
    auth = {"mode": "htpasswd", "htpasswd_file": str(users),
            "rules": [{"repository": "{user}/**", "users": ["*"],
                       "actions": ["pull", "push", "delete"]}]}
    config = {"auth": auth, "limits": limits}
    with replica(root / "a", upstream, state, **config) as a, \
            replica(root / "b", upstream, state, **config) as b:
        yield a, b


@contextmanager
def replica_pair(root: Path, upstream: EmulatorProcess, state: dict[str, Any],
                 **config: Any) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two replicas sharing ``state`` (and the rest of ``config``), in ``root``/a and
    ``root``/b."""
    with replica(root / "a", upstream, state, **config) as a, \
            replica(root / "b", upstream, state, **config) as b:
        yield a, b
