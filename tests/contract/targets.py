"""The registries a contract scenario runs against: the emulator (a real process), moto in
server mode, and real Amazon ECR only when ``ECR_CONTRACT_AWS_PROFILE`` names an AWS profile
(region from ``ECR_CONTRACT_AWS_REGION``, else the profile's).

``Target.other()`` is a client of a second account, for the cross-account scenario: a key
with ``aws_account_id`` in the emulator's credentials file, moto's ``x-moto-account-id``
header, or on AWS the profile ``ECR_CONTRACT_AWS_OTHER_PROFILE`` names (in another account
than the first profile's)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession

from tests.support.emulator import EmulatorProcess, ecr_client, new_access_key

AWS_PROFILE = os.environ.get("ECR_CONTRACT_AWS_PROFILE")
AWS_OTHER_PROFILE = os.environ.get("ECR_CONTRACT_AWS_OTHER_PROFILE")
OTHER_ACCOUNT = "210987654321"  # the second account of the emulator and of moto
# Real ECR only when a profile is named: without one it is not a target at all (nothing to
# skip), and the summary says so.
TARGETS = ("emulator", "moto", "aws") if AWS_PROFILE else ("emulator", "moto")


class Target:
    """A started registry: ``client()`` opens an aiobotocore ECR client of it."""

    def __init__(self, name: str, url: str | None,
                 emulator: EmulatorProcess | None = None) -> None:
        self.name = name
        self.url = url
        self.emulator = emulator

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Any]:
        if self.url is not None:
            async with ecr_client(self.url, retries={"total_max_attempts": 1}) as client:
                yield client
            return
        async with _aws_client(AWS_PROFILE) as client:
            yield client

    @contextlib.asynccontextmanager
    async def other(self) -> AsyncIterator[tuple[Any, str]]:
        """A client of a second account, and that account's id."""
        if self.emulator is not None:
            key = new_access_key("AKIDOTHER")
            self.emulator.add_key(key, account_id=OTHER_ACCOUNT)
            async with ecr_client(self.emulator.url, access_key_id=key,
                                  retries={"total_max_attempts": 1}) as client:
                yield client, OTHER_ACCOUNT
        elif self.url is not None:  # moto: the account is a header of each request
            async with ecr_client(self.url, retries={"total_max_attempts": 1}) as client:
                client.meta.events.register("before-sign.ecr.*", _moto_account)
                yield client, OTHER_ACCOUNT
        else:
            if not AWS_OTHER_PROFILE:
                raise RuntimeError("the cross-account scenario needs ECR_CONTRACT_AWS_OTHER_PROFILE"
                                   ": an AWS profile of another account")
            async with _aws_client(AWS_OTHER_PROFILE) as client:
                session = AioSession(profile=AWS_OTHER_PROFILE)
                async with session.create_client("sts") as sts:
                    account = (await sts.get_caller_identity())["Account"]
                yield client, account


def _moto_account(request: Any, **_: Any) -> None:
    request.headers["x-moto-account-id"] = OTHER_ACCOUNT


@contextlib.asynccontextmanager
async def _aws_client(profile: str | None) -> AsyncIterator[Any]:
    session = AioSession(profile=profile)
    region = os.environ.get("ECR_CONTRACT_AWS_REGION") or session.get_config_variable("region")
    async with session.create_client("ecr", region_name=region, config=AioConfig(
            retries={"mode": "standard"})) as client:
        yield client


@contextlib.contextmanager
def started(name: str, data_dir: Path) -> Iterator[Target]:
    if name == "emulator":
        with EmulatorProcess(data_dir, env={"ECR_EMULATOR_LIFECYCLE_INTERVAL": "0"}) as emu:
            yield Target(name, emu.url, emu)
    elif name == "moto":
        from tests.emulator.api.differential import moto_server

        with moto_server() as url:
            yield Target(name, url)
    else:
        yield Target(name, None)
