"""Every private registry one emulator process holds: one per account and region.

ECR has a private registry per account per region. The emulator's own (``--account-id``,
``--region``) keeps its data at the top of the data directory; any other is made the first
time something addresses it, under ``<data-dir>/registries/<account>/<region>/`` with the
same layout, and holds its own repositories, images, blobs and registry settings. A call
addresses the registry of the region its signature is scoped to and of the account its
access key belongs to (``aws_account_id`` in the credentials file; the emulator's account
otherwise). Replication (replicator.py) copies images between them. Each registry's
presigned downloads are served under a route naming it. Each open registry holds a database
thread, so a process opens at most ``MAX_REGISTRIES`` of them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from aiohttp import web

from ecr_emulator import downloads
from ecr_emulator.errors import AwsError
from ecr_emulator.state import REGISTRY_LAYER_ROUTE as ROUTE
from ecr_emulator.state import STATE_KEY, EmulatorState

_ACCOUNT = re.compile(r"[0-9]{12}")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")
MAX_REGISTRIES = 64


class Registries:
    def __init__(self, primary: EmulatorState) -> None:
        self.primary = primary
        primary.registries = self
        self._others: dict[tuple[str, str], EmulatorState] = {}
        self._lock = asyncio.Lock()

    async def get(self, account_id: str, region: str) -> EmulatorState:
        """The registry of ``account_id`` in ``region``, opened (and made) if need be."""
        if (account_id, region) == (self.primary.account_id, self.primary.region):
            return self.primary
        if not (_ACCOUNT.fullmatch(account_id) and _REGION.fullmatch(region)):
            raise ValueError(f"no registry {account_id} in {region!r}")
        state = self._others.get((account_id, region))
        if state is not None:
            return state
        async with self._lock:
            state = self._others.get((account_id, region))
            if state is None:
                if len(self._others) + 1 >= MAX_REGISTRIES:
                    raise AwsError("LimitExceededException",
                                   f"The emulator holds at most {MAX_REGISTRIES} registries "
                                   "(accounts and regions) in one process")
                primary = self.primary
                state = EmulatorState(
                    primary.data_dir / "registries" / account_id / region,
                    account_id=account_id, region=region, public_url=primary.public_url,
                    settings=primary.settings,
                    layer_route=ROUTE.replace("{account}", account_id).replace(
                        "{region}", region))
                state.registries = self
                await state.start()
                self._others[(account_id, region)] = state
        return state

    def opened(self, account_id: str, region: str) -> EmulatorState | None:
        if (account_id, region) == (self.primary.account_id, self.primary.region):
            return self.primary
        return self._others.get((account_id, region))

    async def existing(self, account_id: str, region: str) -> EmulatorState | None:
        """The registry of ``account_id`` in ``region`` if something made it (now or in an
        earlier run); None without making one."""
        state = self.opened(account_id, region)
        if state is not None:
            return state
        path = self.primary.data_dir / "registries" / account_id / region
        named = bool(_ACCOUNT.fullmatch(account_id) and _REGION.fullmatch(region))
        if not (named and await asyncio.to_thread(path.is_dir)):
            return None
        return await self.get(account_id, region)

    def all(self) -> list[EmulatorState]:
        """Every registry opened so far, the emulator's own first."""
        return [self.primary, *self._others.values()]

    async def close(self) -> None:
        pending = {task for state in self.all() for task in state.background}
        if pending:  # replications under way write into the registries closed below
            await asyncio.wait(pending, timeout=10)
        for state in list(self._others.values()):
            await state.stop()
        self._others.clear()


REGISTRIES_KEY = web.AppKey("ecr_emulator_registries", Registries)


async def _serve_layer(request: web.Request) -> web.StreamResponse:
    info = request.match_info
    try:
        state = await request.app[REGISTRIES_KEY].existing(info["account"], info["region"])
    except AwsError:
        # Every registry slot is taken (the signature is only checked with the registry's
        # own secret, once it is open): S3's answer to a moment it cannot serve, not a 500.
        return downloads.s3_error(503, "SlowDown", "Please reduce your request rate.")
    if state is None:
        raise web.HTTPNotFound()
    return await downloads.serve_blob(request, state)


def install(app: web.Application) -> None:
    """Give ``app`` (whose STATE_KEY is set) its other registries and their download route."""
    registries = Registries(app[STATE_KEY])
    app[REGISTRIES_KEY] = registries

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        yield
        await registries.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get(ROUTE, _serve_layer)
