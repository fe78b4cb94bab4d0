"""The registries a contract scenario runs against: the emulator (a real process), moto in
server mode, and real Amazon ECR only when ``ECR_CONTRACT_AWS_PROFILE`` names an AWS profile
(region from ``ECR_CONTRACT_AWS_REGION``, else the profile's)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession

from tests.support.emulator import EmulatorProcess, ecr_client

AWS_PROFILE = os.environ.get("ECR_CONTRACT_AWS_PROFILE")
# Real ECR only when a profile is named: without one it is not a target at all (nothing to
# skip), and the summary says so.
TARGETS = ("emulator", "moto", "aws") if AWS_PROFILE else ("emulator", "moto")


class Target:
    """A started registry: ``client()`` opens an aiobotocore ECR client of it."""

    def __init__(self, name: str, url: str | None) -> None:
        self.name = name
        self.url = url

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Any]:
        if self.url is not None:
            async with ecr_client(self.url, retries={"total_max_attempts": 1}) as client:
                yield client
            return
        session = AioSession(profile=AWS_PROFILE)
        region = os.environ.get("ECR_CONTRACT_AWS_REGION") or session.get_config_variable(
            "region")
        async with session.create_client("ecr", region_name=region, config=AioConfig(
                retries={"mode": "standard"})) as client:
            yield client


@contextlib.contextmanager
def started(name: str, data_dir: Path) -> Iterator[Target]:
    if name == "emulator":
        with EmulatorProcess(data_dir, env={"ECR_EMULATOR_LIFECYCLE_INTERVAL": "0"}) as emu:
            yield Target(name, emu.url)
    elif name == "moto":
        from tests.emulator.api.differential import moto_server

        with moto_server() as url:
            yield Target(name, url)
    else:
        yield Target(name, None)
