"""Single-flight: concurrent identical upstream calls collapse into one.

When 200 nodes start the same DaemonSet, they ask for the same manifest and the same layer
URLs at the same moment; with the caches still cold each would otherwise make its own ECR
call. ``SingleFlight.do(key, fn)`` runs ``fn`` once per key at a time: callers that arrive
while it runs wait for that call and share its answer (or its exception).

The call runs in a task of its own and callers await it shielded, so a caller that goes away
(client disconnect) cancels neither the call nor the others waiting on it; an answer nobody
is left waiting for still fills the caches, which is what a retry would ask for next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from gateway.observability.metrics import SHARED_CALLS

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._calls: dict[Hashable, asyncio.Task[T]] = {}

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    async def do(self, key: Hashable, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        task = self._calls.get(key)
        if task is None:
            task = asyncio.create_task(fn())
            self._calls[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        else:
            SHARED_CALLS.labels(self._kind).inc()
        return await asyncio.shield(task)

    def _finished(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._calls.get(key) is task:
            del self._calls[key]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning if nobody waited
