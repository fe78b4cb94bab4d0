"""Work that runs beside the server on a schedule of its own (lifecycle policies, expired
uploads), for as long as the server runs, over every registry the process holds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from aiohttp import web

from ecr_emulator.state import EmulatorState


def every_registry(state: EmulatorState) -> list[EmulatorState]:
    """``state`` and the other registries (accounts, regions) its process serves."""
    registries = state.registries
    return registries.all() if registries is not None else [state]


def run_beside(app: web.Application,
               start: Callable[[web.Application], Coroutine[Any, Any, None] | None]) -> None:
    """Run what ``start`` returns (nothing: the schedule is off) once the states have
    started; cancelled when the server stops."""

    async def beside(app: web.Application) -> AsyncIterator[None]:
        work = start(app)
        task = asyncio.create_task(work) if work is not None else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.cleanup_ctx.append(beside)
