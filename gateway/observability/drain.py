"""Graceful shutdown: stop accepting, let in-flight requests finish, then stop.

aiohttp's own shutdown closes every connection first and drops the request bodies still
arriving on them, which would cut every upload in flight. So on SIGTERM the gateway first
only closes its listening sockets and waits (up to ``shutdown_grace_seconds``) for the
requests in flight, counted by the access-log middleware, to finish; responses sent while
draining close their connection so keep-alive clients reconnect elsewhere. Whatever is
still running then is cancelled: an upload cut short records the bytes it received, and
its client resumes from that offset (through another replica, or this one restarted).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

log = logging.getLogger("gateway")


class InFlight:
    def __init__(self) -> None:
        self.count = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count <= 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


IN_FLIGHT_REQUESTS = web.AppKey("in_flight_requests", InFlight)


async def graceful_stop(runner: web.AppRunner, grace: float) -> None:
    started = time.monotonic()
    for site in list(runner.sites):
        await site.stop()  # closes the listening socket only
    tracker = runner.app.get(IN_FLIGHT_REQUESTS) if runner.app is not None else None
    if tracker is not None:
        tracker.draining = True
        try:
            async with asyncio.timeout(grace):
                await tracker.wait_idle()
        except TimeoutError:
            log.warning("shutdown grace of %ss ran out with %d requests in flight; "
                        "cancelling them", grace, tracker.count)
    log.info("stopped accepting after %.1fs of draining", time.monotonic() - started)
    await runner.cleanup()
