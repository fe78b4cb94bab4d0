"""A real redis-server per module, and a way to start gateway replicas that share it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

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
def replica_pair(root: Path, upstream: EmulatorProcess, state: dict[str, Any]
                 ) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two replicas sharing ``state``, in ``root``/a and ``root``/b."""
    with replica(root / "a", upstream, state) as a, replica(root / "b", upstream, state) as b:
        yield a, b
