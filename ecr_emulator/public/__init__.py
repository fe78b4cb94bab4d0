"""Amazon ECR Public in the emulator: the ``ecr-public`` API and a public registry endpoint.

The ECR Public registry has a state of its own (database, blobs, uploads, signing secret)
under ``<data-dir>/public``: its repositories are not the private registry's, as on AWS, but
every query and durability guarantee of the private registry applies to it, under ECR Public's
own upload quotas (1,000 parts, 10,000 MiB layers). Its API shares the emulator's ``POST /``
route (X-Amz-Target ``SpencerFrontendService.<Action>``, see actions.py); its pull endpoint
shares the emulator's port (``/token``, ``/v2/...``, see registry.py). The request log, the
fault rules and the per-key access rules are the emulator's, with action names
``ecr-public:<Action>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

from aiohttp import web

from ecr_emulator.public import actions, registry, tokens
from ecr_emulator.settings import Settings
from ecr_emulator.state import PUBLIC_STATE_KEY, STATE_KEY, EmulatorState

__all__ = ["actions", "install", "registry"]


def install(app: web.Application) -> None:
    """Give ``app`` (whose STATE_KEY is set) the ECR Public registry."""
    main = app[STATE_KEY]
    state = EmulatorState(main.data_dir / "public", account_id=main.account_id,
                          region=actions.REGION, public_url=main.public_url,
                          settings=public_settings(main.settings))
    app[PUBLIC_STATE_KEY] = state

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await state.start()
        yield
        await state.stop()

    app.cleanup_ctx.append(lifecycle)
    registry.add_routes(app, tokens.PullLimits(main.settings))


def public_settings(settings: Settings) -> Settings:
    """The private registry's settings with ECR Public's own upload quotas."""
    return dataclasses.replace(settings, max_parts=settings.public_max_parts,
                               max_layer_size=settings.public_max_layer_size)
