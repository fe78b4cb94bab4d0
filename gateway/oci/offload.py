"""CPU work on large input (a manifest of megabytes) done beside the event loop.

Checking a 4 MiB manifest takes a tenth of a second of Python; on the event loop that is a
tenth of a second every other client waits. Beside it, the work still needs the GIL, which
the interpreter hands back and forth every few milliseconds: one worker thread costs the loop
one such slice at a time, where several take theirs in turn before the loop's next. Sixteen
such manifests on the default thread pool held other clients 1.7 to 2.2 s (2.0 to 2.4 s on
the loop itself), on one thread 0.2 to 0.5 s. So the work shares one thread, in the order
it came.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")

_worker: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _worker
    if _worker is None:
        _worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="input-work")
    return _worker


async def off_loop(work: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``work(*args, **kwargs)`` on the input worker thread."""
    return await asyncio.get_running_loop().run_in_executor(
        _executor(), functools.partial(work, *args, **kwargs))
